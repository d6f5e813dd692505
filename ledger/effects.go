package ledger

import "gorm.io/gorm"

// confirmPayload and releasePayload are the bodies of the inventory calls
// (see gateway/inventory: Confirmation and Release).
type confirmPayload struct {
	Key         string `json:"key"`
	OutTradeNo  string `json:"out_trade_no"`
	AmountTotal int64  `json:"amount_total"`
}

type releasePayload struct {
	Key         string `json:"key"`
	OutRefundNo string `json:"out_refund_no"`
	OutTradeNo  string `json:"out_trade_no"`
	Amount      int64  `json:"amount"`
}

// paymentSucceeded runs, inside the transaction that moved a payment to
// SUCCESS, the effects that must commit or roll back with that change:
// the job that confirms the order's stock downstream. For an order WeChat
// Pay already reports refunded (refundedOutside) the job is stored dead,
// held for a person: confirming stock may ship goods whose money went
// back. Replaying it confirms the stock.
func (s *Store) paymentSucceeded(tx *gorm.DB, p *Payment, refundedOutside bool) error {
	row, err := s.confirmJob(p)
	if err != nil {
		return err
	}
	if refundedOutside {
		row.State, row.LastError = JobDead, heldRefundedOutside
	}
	return createJobs(tx, []outboxJobRow{row})
}

// heldRefundedOutside is the last error of a confirmation held because
// the order was refunded outside the gateway.
const heldRefundedOutside = "held: WeChat Pay reports the order refunded outside the gateway (anomaly REFUNDED_OUTSIDE); " +
	"replay this job to confirm the stock if the order ships"

// confirmJob is the job that confirms a paid order's stock downstream.
func (s *Store) confirmJob(p *Payment) (outboxJobRow, error) {
	key := "confirm:" + p.OutTradeNo
	return s.jobRow(JobConfirmInventory, key, p.OutTradeNo, "",
		confirmPayload{Key: key, OutTradeNo: p.OutTradeNo, AmountTotal: p.AmountTotal})
}

// refundSucceeded runs inside the transaction that moved a refund to
// SUCCESS: the job that releases the refunded stock downstream.
// If the order's confirmation is dead the release is stored dead, held
// by it (see holdReleases).
func (s *Store) refundSucceeded(tx *gorm.DB, outRefundNo, outTradeNo string, amount int64) error {
	key := "release:" + outRefundNo
	row, err := s.jobRow(JobReleaseInventory, key, outTradeNo, outRefundNo,
		releasePayload{Key: key, OutRefundNo: outRefundNo, OutTradeNo: outTradeNo, Amount: amount})
	if err != nil {
		return err
	}
	dead, err := deadConfirmation(tx, outTradeNo)
	if err != nil {
		return err
	}
	if dead != 0 {
		row.State, row.LastError = JobDead, heldBy(dead)
	}
	return createJobs(tx, []outboxJobRow{row})
}
