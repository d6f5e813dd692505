package ledger

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"gorm.io/gorm"
)

// repairPayment records a payment WeChat Pay settled but the ledger
// missed, as a compensation notice through the state machine. A refusal
// by the ledger (the state machine, the data) is a REFUSED repair; any
// other error (the database unreachable, a lost commit) is returned, so
// the run fails and is retried instead of storing a day that says "not
// repaired" when the repair may even have committed. A payment recorded
// meanwhile (its callback, or a compensation query, came between the
// run's read and its repair) is no mismatch: it answers "" (flagged if
// WeChat Pay reports it refunded outside the gateway). A payment
// WeChat Pay reports refunded since is recorded as an order query would
// record it (trade_state REFUND): flagged, its stock confirmation held.
// So is a registered order paid another amount (flagged AMOUNT_MISMATCH):
// WeChat Pay's order query confirmed the row (bill.Confirm), so the money
// was paid, and refusing the repair would leave it out of the ledger.
func (s *Store) repairPayment(ctx context.Context, bp BillPayment, c Confirmed) (string, string, error) {
	refunded := c.Refunded
	state := "SUCCESS"
	if refunded {
		state = "REFUND"
	}
	u := TransactionUpdate{
		Notice: Notice{NotifyID: "reconcile:" + bp.TransactionID, Source: SourceReconcile, EventType: "RECONCILE.SUCCESS",
			ResourceType: "trade_bill_row", Summary: "payment found in the trade bill", OutTradeNo: bp.OutTradeNo,
			TransactionID: bp.TransactionID, Plaintext: bp.Line, CreateTime: bp.Time},
		OutTradeNo: bp.OutTradeNo, TransactionID: bp.TransactionID, TradeState: state, AppID: bp.AppID,
		MchID: bp.MchID, PayerOpenID: bp.OpenID, AmountTotal: bp.Amount, PayerTotal: c.PayerTotal, Currency: bp.Currency,
		SuccessTime: bp.Time,
	}
	p, err := s.ApplyTransaction(ctx, u)
	switch {
	case err == nil && (refunded || otherAmount(p)):
		slog.InfoContext(ctx, "reconcile repaired payment held for a person", "out_trade_no", bp.OutTradeNo,
			"transaction_id", bp.TransactionID)
		return RepairApplied, heldRepairDetail(p, refunded), nil
	case err == nil:
		slog.InfoContext(ctx, "reconcile repaired payment", "out_trade_no", bp.OutTradeNo, "transaction_id", bp.TransactionID)
		return RepairApplied, "", nil
	case errors.Is(err, ErrAlreadyRecorded) && refunded:
		return "", "", s.flagRefundedMeanwhile(ctx, bp)
	case errors.Is(err, ErrAlreadyRecorded):
		return "", "", nil
	case refusedByLedger(err):
		slog.WarnContext(ctx, "reconcile repair refused", "out_trade_no", bp.OutTradeNo, "err", err)
		return RepairRefused, truncate(err.Error(), itemDetailWidth), nil
	}
	return "", "", fmt.Errorf("repair payment %s: %w", bp.OutTradeNo, err)
}

// otherAmount reports a registered order paid another amount than
// registered (see amountFlag).
func otherAmount(p *Payment) bool { return p.Registered && p.AmountTotal != p.ExpectedAmount }

// heldRepairDetail says why a repaired payment's stock confirmation is
// held for a person.
func heldRepairDetail(p *Payment, refunded bool) string {
	var why []string
	if refunded {
		why = append(why, "refunded since (anomaly REFUNDED_OUTSIDE)")
	}
	if otherAmount(p) {
		why = append(why, fmt.Sprintf("registered for %d fen, paid %d fen (anomaly AMOUNT_MISMATCH)", p.ExpectedAmount, p.AmountTotal))
	}
	return "recorded " + strings.Join(why, ", ") + ": its stock confirmation is held for a person"
}

// flagRefundedMeanwhile: WeChat Pay reports the payment refunded, but
// its callback (or the lost-callback check) recorded it as paid while the
// run checked it, so the repair did not flag it and its stock
// confirmation was not held. Unless the ledger holds another transaction
// for the order (a DUPLICATE_PAYMENT, flagged as such) or the gateway has
// a refund of it that may have been paid (which also makes its
// trade_state REFUND), a person is told, as a repair would have.
func (s *Store) flagRefundedMeanwhile(ctx context.Context, bp BillPayment) error {
	p, err := s.Payment(ctx, bp.OutTradeNo)
	if err != nil || p.TransactionID != bp.TransactionID {
		return err
	}
	refunds, err := s.Refunds(ctx, bp.OutTradeNo)
	if err != nil {
		return err
	}
	for _, r := range refunds {
		if !r.State.returnsMoney() { // not FAILED or CLOSED: it may be WeChat Pay's REFUND
			return nil
		}
	}
	flag := refundedOutsideFlag(p) // the same kind and ref as the repair's flag: one case for a person
	flag.Detail = fmt.Sprintf("WeChat Pay reports order %s (transaction %s, %d fen) refunded outside the gateway; its payment "+
		"was recorded as paid while reconciliation checked it, so its stock confirmation (job confirm:%s) was "+
		"not held and may have gone out: check whether the order shipped", p.OutTradeNo, p.TransactionID, p.AmountTotal, p.OutTradeNo)
	return s.inTx(ctx, func(tx *gorm.DB) error {
		if err := markDeadHeldOutside(tx, p.OutTradeNo); err != nil {
			return err
		}
		return s.recordAnomaly(tx, flag)
	})
}

// markDeadHeldOutside: the order's confirmation, if it is dead for
// another reason (held for an amount that differs, refused by the
// inventory), says from now on that it is held for a refund outside the
// gateway too, and its version moves, as when a refund notice brings the
// news (flagUnheld): a person replaying it decides knowing it, and a
// replay decided on what it said before is refused (ReplayIf). Locked
// (lockConfirmation).
func markDeadHeldOutside(tx *gorm.DB, outTradeNo string) error {
	job, found, err := lockConfirmation(tx, "confirm:"+outTradeNo)
	if err != nil || !found || job.State != JobDead || heldOutside(job.LastError) {
		return err
	}
	return markHeld(tx, job, job.LastError)
}

// refusedByLedger tells the ledger's own refusals, which a rerun would
// meet again, from failures to reach or commit to the database.
func refusedByLedger(err error) bool {
	var mismatch *AmountMismatchError
	return errors.As(err, &mismatch) || errors.Is(err, ErrIllegalTransition) || errors.Is(err, ErrNoChange) ||
		errors.Is(err, ErrConflict) || errors.Is(err, ErrNotFound) || errors.Is(err, gorm.ErrDuplicatedKey)
}

// earlierRepairs rebuilds the items of bill payments an earlier run
// repaired. The ledger now agrees with the bill, but the payment reached
// SUCCESS through reconciliation, so it was missing: its state history row,
// written in the repair's transaction, is the record. It survives a rerun
// and a run whose report was never stored (a crash, a lost claim).
func (s *Store) earlierRepairs(ctx context.Context, matched []BillPayment, ledger map[string]*Payment) ([]ReconcileItem, error) {
	keys := make([]string, len(matched))
	for i, bp := range matched {
		keys[i] = bp.OutTradeNo
	}
	repairs, err := s.reconcileRepairs(ctx, keys)
	if err != nil {
		return nil, err
	}
	var items []ReconcileItem
	for _, bp := range matched {
		h, ok := repairs[bp.OutTradeNo]
		if ok && h.Ref == "reconcile:"+bp.TransactionID {
			items = append(items, repairedItem(bp, h, ledger[bp.OutTradeNo]))
		}
	}
	return items, nil
}

// reconcileRepairs returns, by out_trade_no, the history rows of payments
// moved to SUCCESS by reconciliation.
func (s *Store) reconcileRepairs(ctx context.Context, keys []string) (map[string]historyRow, error) {
	out := map[string]historyRow{}
	for len(keys) > 0 {
		n := min(len(keys), 500)
		var rows []historyRow
		err := s.db.WithContext(ctx).Where("entity = ? AND entity_key IN ? AND source = ? AND to_state = ?",
			EntityPayment, keys[:n], SourceReconcile, PaymentSuccess).Find(&rows).Error
		if err != nil {
			return nil, fmt.Errorf("read reconciliation repairs: %w", err)
		}
		for _, r := range rows {
			out[r.EntityKey] = r
		}
		keys = keys[n:]
	}
	return out, nil
}

// repairedItem is the item of a payment repaired by an earlier run, as
// that run reported it: the ledger side is the state before the repair.
func repairedItem(bp BillPayment, h historyRow, lp *Payment) ReconcileItem {
	it := ReconcileItem{Kind: MismatchPaymentMissingInLedger, OutTradeNo: bp.OutTradeNo, TransactionID: bp.TransactionID,
		Bill: &ItemSide{State: "SUCCESS", Amount: bp.Amount, Line: bp.Line}, Repair: RepairApplied,
		RepairDetail: "repaired at " + h.CreatedAt.UTC().Format(time.RFC3339) + " (state history " + strconv.FormatUint(h.ID, 10) + ")"}
	if h.FromState != string(PaymentNone) && lp != nil {
		it.Ledger = &ItemSide{State: h.FromState, Amount: lp.ExpectedAmount}
	}
	return it
}
