package ledger

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"gorm.io/gorm"

	"paygateway/migrations"
)

// TransactionUpdate is WeChat Pay's word on an order's payment: the
// decrypted resource of a TRANSACTION.* callback, or an order query answer.
type TransactionUpdate struct {
	Notice        Notice
	OutTradeNo    string
	TransactionID string
	TradeState    string
	AppID         string
	MchID         string
	PayerOpenID   string
	AmountTotal   int64
	PayerTotal    int64
	Currency      string
	SuccessTime   time.Time
}

// targetState maps WeChat's trade_state onto the payment state machine;
// states that are not final (NOTPAY, USERPAYING) map to none.
func targetState(tradeState string) PaymentState {
	switch tradeState {
	case "SUCCESS", "REFUND":
		return PaymentSuccess
	case "CLOSED", "REVOKED", "PAYERROR":
		return PaymentClosed
	}
	return PaymentNone
}

// ApplyTransaction records the notice and moves the payment through its
// state machine, both in one transaction. It returns:
//   - ErrAlreadyRecorded when the notice id is stored already or the
//     payment is already in the target state (nothing changes);
//   - *AmountMismatchError when an order was paid in a currency other
//     than CNY (nothing is applied; the mismatch is flagged as an
//     anomaly). A registered order paid another amount in CNY is no
//     error: see amountFlag;
//   - ErrNoChange when the trade state is not final, or closes an order
//     the ledger never knew;
//   - an error matching ErrIllegalTransition for a refused change.
func (s *Store) ApplyTransaction(ctx context.Context, u TransactionUpdate) (*Payment, error) {
	var out *Payment
	var flag *Anomaly
	err := s.inTx(ctx, func(tx *gorm.DB) error {
		out, flag = nil, nil
		if err := s.insertNotice(tx, u.Notice); err != nil {
			return err
		}
		var err error
		out, flag, err = s.applyTransaction(tx, u)
		return err
	})
	if flag != nil {
		// The transaction rolled back, so the flag is the only record of,
		// say, a second payment of the order: if it cannot be written the
		// caller must not answer 2xx, and the redelivery flags it again.
		if ferr := s.RecordAnomaly(ctx, *flag); ferr != nil {
			slog.ErrorContext(ctx, "flag anomaly failed", "out_trade_no", u.OutTradeNo, "kind", flag.Kind, "err", ferr)
			err = ferr
		}
	}
	if err != nil {
		return out, fmt.Errorf("apply transaction %s (%s): %w", u.OutTradeNo, u.Notice.NotifyID, err)
	}
	return out, nil
}

func (s *Store) applyTransaction(tx *gorm.DB, u TransactionUpdate) (*Payment, *Anomaly, error) {
	if targetState(u.TradeState) == PaymentNone {
		return nil, nil, ErrNoChange
	}
	// Every caller checks it; the last guard keeps a payment without an
	// order (and its stock confirmation) out of the ledger.
	if u.OutTradeNo == "" {
		return nil, nil, fmt.Errorf("%w: the update names no out_trade_no", ErrNoChange)
	}
	row, err := findPayment(lockForUpdate(tx), u.OutTradeNo)
	if errors.Is(err, ErrNotFound) {
		return s.insertPaid(tx, u)
	}
	if err != nil {
		return nil, nil, err
	}
	return s.moveExisting(tx, row, u)
}

// insertPaid creates the payment of an order nobody registered. If a twin
// transaction inserted it first, it falls back to the existing row.
func (s *Store) insertPaid(tx *gorm.DB, u TransactionUpdate) (*Payment, *Anomaly, error) {
	next, flag, err := s.decide(nil, u)
	if err != nil {
		return nil, flag, err
	}
	err = tx.Create(next.row).Error
	if err != nil && !errors.Is(err, gorm.ErrDuplicatedKey) {
		return nil, nil, fmt.Errorf("insert paid payment: %w", err)
	}
	if err != nil { // a twin inserted it first
		existing, err := findPayment(lockForUpdate(tx), u.OutTradeNo)
		if err != nil {
			return nil, nil, err
		}
		return s.moveExisting(tx, existing, u)
	}
	return s.afterMove(tx, next, u)
}

func (s *Store) moveExisting(tx *gorm.DB, row *paymentRow, u TransactionUpdate) (*Payment, *Anomaly, error) {
	next, flag, err := s.decide(row, u)
	if err != nil {
		return row.payment(), flag, err
	}
	if err := s.savePayment(tx, next.row); err != nil {
		return nil, nil, err
	}
	for _, flag := range next.flags {
		if err := s.recordAnomaly(tx, flag); err != nil {
			return nil, nil, err
		}
	}
	return s.afterMove(tx, next, u)
}

// move is what the payment state machine decided for one update: the row
// as it must be written and the state it leaves.
type move struct {
	row   *paymentRow
	from  string
	flags []Anomaly // recorded with the move
	// hold, when set, is why the order's stock confirmation is stored
	// dead, held for a person, instead of being sent.
	hold string
}

// plain reports a move with nothing for a person: no flag, no hold.
func (m move) plain() bool { return len(m.flags) == 0 && m.hold == "" }

// decide is the payment state machine's verdict on one update, given the
// order's locked row (nil when the ledger has none). It writes nothing; an
// error means nothing may be written, and may come with an anomaly to flag.
func (s *Store) decide(row *paymentRow, u TransactionUpdate) (move, *Anomaly, error) {
	target := targetState(u.TradeState)
	switch {
	case target == PaymentNone:
		return move{}, nil, ErrNoChange
	case row == nil && target != PaymentSuccess:
		return move{}, nil, ErrNoChange
	case target == PaymentSuccess && currencyOf(u.Currency) != ledgerCurrency && (row == nil || row.State != string(target)):
		mismatch := &AmountMismatchError{OutTradeNo: u.OutTradeNo, Got: u.AmountTotal, Currency: truncate(u.Currency, 16)}
		if row != nil {
			mismatch.Expected = derefInt(row.ExpectedAmount)
		}
		flag := &Anomaly{Kind: AnomalyAmountMismatch, Ref: "paid:" + u.TransactionID, OutTradeNo: u.OutTradeNo, Detail: mismatch.Error()}
		return move{}, flag, mismatch
	case row == nil:
		now := s.now()
		next := &paymentRow{OutTradeNo: u.OutTradeNo, State: string(PaymentSuccess), Currency: currencyOf(u.Currency),
			CreatedAt: now, UpdatedAt: now}
		fillPaid(next, u)
		return move{row: next, from: string(PaymentNone)}, nil, nil
	case PaymentState(row.State) == target:
		return move{}, duplicatePaymentFlag(row, u), ErrAlreadyRecorded
	}
	if err := paymentMachine.check(EntityPayment, row.OutTradeNo, row.State, string(target)); err != nil {
		return move{}, nil, err
	}
	next := *row
	next.State = string(target)
	m := move{row: &next, from: row.State}
	if target == PaymentSuccess {
		if flag := payerFlag(row, u); flag != nil {
			m.flags = append(m.flags, *flag)
		}
		if flag := amountFlag(row, u); flag != nil {
			m.flags = append(m.flags, *flag)
			m.hold = heldAmount(derefInt(row.ExpectedAmount), u.AmountTotal)
		}
		if flag := paidAfterCloseFlag(row, u, m.hold != ""); flag != nil {
			m.flags = append(m.flags, *flag)
		}
		if row.Registered && row.RegisteredOpenID == nil { // keep what an older binary registered before the payer is set
			reg := deref(row.PayerOpenID)
			next.RegisteredOpenID = &reg
		}
		fillPaid(&next, u)
	}
	return m, nil, nil
}

// amountFlag flags a registered order WeChat Pay says was paid another
// amount (in CNY) than registered. The payment is recorded all the same,
// with what was paid: the money was taken and WeChat Pay signed it, and
// refusing it only made WeChat Pay redeliver it for 24 hours and then give
// up, which left it out of the ledger (out of finance's totals, and no
// refund possible through the gateway). What must wait for a person is the
// stock: its confirmation is held (see heldAmount). One flag per WeChat
// transaction, however it was learnt (callback, compensation query, bill):
// one case for a person, not one per source.
func amountFlag(row *paymentRow, u TransactionUpdate) *Anomaly {
	expected := derefInt(row.ExpectedAmount)
	if !row.Registered || expected == u.AmountTotal {
		return nil
	}
	return &Anomaly{Kind: AnomalyAmountMismatch, Ref: "paid:" + u.TransactionID, OutTradeNo: u.OutTradeNo,
		Detail: fmt.Sprintf("order %s registered for %d fen, paid %d fen (transaction %s): recorded as paid with what "+
			"was paid, its stock confirmation (job confirm:%s) held in the dead letters: replay it if the order ships, "+
			"or refund the order", u.OutTradeNo, expected, u.AmountTotal, u.TransactionID, u.OutTradeNo)}
}

// paidAfterCloseFlag flags the payment of an order the ledger had closed
// (CLOSED → SUCCESS): WeChat Pay said at its expire_at that it was unpaid
// or unknown, and took the money all the same (a callback held up while
// its queries lagged, or a prepay made after the close). The money was
// paid, so it is recorded and, paid as registered (not held), the stock
// confirmed; but the ledger showed the order closed, and the business may
// have cancelled it, so a person must know. One flag per order: CLOSED is
// entered once.
func paidAfterCloseFlag(row *paymentRow, u TransactionUpdate, held bool) *Anomaly {
	if PaymentState(row.State) != PaymentClosed {
		return nil
	}
	stock := "its stock confirmed"
	if held {
		stock = "its stock confirmation held (see its AMOUNT_MISMATCH)"
	}
	return &Anomaly{Kind: AnomalyPaidAfterClose, Ref: "closed:" + row.OutTradeNo, OutTradeNo: row.OutTradeNo,
		Detail: fmt.Sprintf("order %s was closed in the ledger (expire_at %s) and then paid %d fen (transaction %s, "+
			"success_time %s): recorded as paid, %s; if the order was cancelled, refund it",
			row.OutTradeNo, timeText(row.ExpireAt), u.AmountTotal, u.TransactionID, timeText(&u.SuccessTime), stock)}
}

// timeText writes a time of a flag's detail (RFC 3339, UTC; "none").
func timeText(t *time.Time) string {
	if t == nil || t.IsZero() {
		return "none"
	}
	return t.UTC().Format(time.RFC3339)
}

// payerFlag flags a registered order paid by someone other than the
// openid it was registered for. The payer WeChat Pay names is recorded,
// and only they may ask for a refund; finance should know the order went
// to someone else.
func payerFlag(row *paymentRow, u TransactionUpdate) *Anomaly {
	if !row.Registered {
		return nil
	}
	return payerMismatch(row.OutTradeNo, row.registrationOpenID(), u.PayerOpenID)
}

// payerMismatch flags an order registered for one openid and paid by
// another (nil when either is unknown or they agree), whichever of the
// registration and the payment came first.
func payerMismatch(outTradeNo, registered, paidBy string) *Anomaly {
	if registered == "" || paidBy == "" || registered == paidBy {
		return nil
	}
	return &Anomaly{Kind: AnomalyPayerMismatch, Ref: "payer:" + outTradeNo, OutTradeNo: outTradeNo,
		Detail: fmt.Sprintf("registered for openid %s, paid by openid %s", registered, paidBy)}
}

// savePayment writes a changed row only if nobody else changed it since
// it was read (optimistic check on version, on top of the row lock).
func (s *Store) savePayment(tx *gorm.DB, row *paymentRow) error {
	row.UpdatedAt = s.now()
	res := tx.Model(&paymentRow{}).Where("id = ? AND version = ?", row.ID, row.Version).Updates(map[string]any{
		"state": row.State, "transaction_id": row.TransactionID, "amount_total": row.AmountTotal,
		"payer_total": row.PayerTotal, "currency": row.Currency, "payer_openid": row.PayerOpenID,
		"registered_openid": row.RegisteredOpenID, "appid": row.AppID, "mchid": row.MchID,
		"success_time": row.SuccessTime, "version": row.Version + 1, "updated_at": row.UpdatedAt,
	})
	if res.Error != nil {
		return fmt.Errorf("update payment %s: %w", row.OutTradeNo, res.Error)
	}
	if res.RowsAffected != 1 {
		return fmt.Errorf("update payment %s: changed concurrently (version %d)", row.OutTradeNo, row.Version)
	}
	row.Version++
	return nil
}

func (s *Store) afterMove(tx *gorm.DB, m move, u TransactionUpdate) (*Payment, *Anomaly, error) {
	t := Transition{Entity: EntityPayment, EntityKey: m.row.OutTradeNo, OutTradeNo: m.row.OutTradeNo,
		From: m.from, To: m.row.State, Source: u.Notice.Source, Ref: u.Notice.NotifyID}
	if err := s.appendHistory(tx, t); err != nil {
		return nil, nil, err
	}
	p := m.row.payment()
	if p.State != PaymentSuccess {
		return p, nil, nil
	}
	flag, err := s.refundedOutside(tx, p, u)
	if err != nil {
		return nil, nil, err
	}
	hold := m.hold
	if flag != nil {
		hold = heldFor(heldRefundedOutside, m.hold)
	}
	if err := s.paymentSucceeded(tx, p, hold); err != nil {
		return nil, nil, err
	}
	if flag != nil {
		if err := s.recordAnomaly(tx, *flag); err != nil {
			return nil, nil, err
		}
	}
	return p, nil, nil
}

// refundedOutside returns, for a payment u moves to SUCCESS, the
// REFUNDED_OUTSIDE flag when the ledger holds WeChat Pay's word that money
// of the order already went back by no refund of the gateway: u itself
// says so (trade_state REFUND), or a REFUND.SUCCESS notice for a refund
// the ledger never made came before the payment (see refundFirst). Then
// the stock confirmation is held, whichever came first. One indexed read.
func (s *Store) refundedOutside(tx *gorm.DB, p *Payment, u TransactionUpdate) (*Anomaly, error) {
	if tradeRefunded(u) {
		flag := refundedOutsideFlag(p)
		return &flag, nil
	}
	first, err := s.refundFirst(tx, []string{p.OutTradeNo})
	if err != nil {
		return nil, err
	}
	outRefundNo, ok := first[p.OutTradeNo]
	if !ok {
		return nil, nil
	}
	flag := refundedFirstFlag(p, outRefundNo)
	return &flag, nil
}

// tradeRefunded reports an update that says the payment was already
// refunded when WeChat Pay answered (trade_state REFUND): a callback, an
// order query or a bill row.
func tradeRefunded(u TransactionUpdate) bool { return u.TradeState == "REFUND" }

// refundFirst returns, by out_trade_no, the out_refund_no of a refund
// WeChat Pay reported SUCCESS by notification for each of the orders
// that names a refund the ledger never made: the UNKNOWN_REFUND anomaly
// (ref "<out_refund_no>:SUCCESS") stored with the notice, in its
// transaction (see applyRefund). Its state does not matter: a person who
// resolved it did not bring the money back. Before a payment's SUCCESS the
// gateway can have made no refund of the order, so any such refund was
// made outside it. One query on the anomalies' out_trade_no index for all
// the orders.
func (s *Store) refundFirst(tx *gorm.DB, outTradeNos []string) (map[string]string, error) {
	if len(outTradeNos) == 0 {
		return nil, nil
	}
	// A locking read: it waits for a refund notice's transaction that
	// wrote such a flag and has not committed (see holdRefundedAfter).
	// Raw SQL: it runs in every payment's transaction, and gorm's builder
	// costs more than the query.
	q := "SELECT out_trade_no, ref FROM anomalies WHERE out_trade_no IN ? AND kind = ? AND ref LIKE ?"
	if s.dialect == migrations.MySQL {
		q += " FOR UPDATE"
	}
	rows, err := tx.Raw(q, outTradeNos, AnomalyUnknownRefund, "%:"+string(RefundSuccess)).Rows()
	if err != nil {
		return nil, fmt.Errorf("look for refunds of %d orders reported before their payment: %w", len(outTradeNos), err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var no, ref string
		if err := rows.Scan(&no, &ref); err != nil {
			return nil, fmt.Errorf("read refunds reported before their payment: %w", err)
		}
		if _, seen := out[no]; !seen {
			out[no] = strings.TrimSuffix(ref, ":"+string(RefundSuccess))
		}
	}
	return out, rows.Err()
}

// refundedOutsideFlag: an order query (the lost-callback check), a
// callback or a bill found the payment already refunded (trade_state
// REFUND) by no refund of the gateway, e.g. by hand in the merchant
// platform. The money came in, so the payment is recorded; its stock
// confirmation waits in the dead letters for a person, who knows whether
// the order ships.
func refundedOutsideFlag(p *Payment) Anomaly {
	return Anomaly{Kind: AnomalyRefundedOutside, Ref: "refunded:" + p.OutTradeNo, OutTradeNo: p.OutTradeNo,
		Detail: fmt.Sprintf("WeChat Pay reports order %s (transaction %s, %d fen) refunded outside the gateway; "+
			"its stock confirmation (job confirm:%s) is held in the dead letters: replay it if the order ships",
			p.OutTradeNo, p.TransactionID, p.AmountTotal, p.OutTradeNo)}
}

// refundedFirstFlag: WeChat Pay's REFUND.SUCCESS notice of a refund the
// gateway never made came before the order's payment (refunded in the
// merchant platform while the payment callback was still redelivered).
// The same case as refundedOutsideFlag, under the same kind and ref: one
// case for a person, however it was learnt.
func refundedFirstFlag(p *Payment, outRefundNo string) Anomaly {
	a := refundedOutsideFlag(p)
	a.Detail = fmt.Sprintf("WeChat Pay reported refund %s of order %s SUCCESS (anomaly UNKNOWN_REFUND) before the order's "+
		"payment (transaction %s, %d fen): refunded outside the gateway; its stock confirmation (job confirm:%s) "+
		"is held in the dead letters: replay it if the order ships", outRefundNo, p.OutTradeNo, p.TransactionID,
		p.AmountTotal, p.OutTradeNo)
	return a
}

func fillPaid(row *paymentRow, u TransactionUpdate) {
	total, payer := u.AmountTotal, u.PayerTotal
	row.TransactionID = nonEmpty(u.TransactionID)
	row.AmountTotal, row.PayerTotal = &total, &payer
	row.Currency = currencyOf(u.Currency)
	// WeChat Pay's signed word on who paid: the one who may ask for
	// refunds. Without it nobody may, not the openid the order was
	// registered with (a request's word, kept in registered_openid).
	row.PayerOpenID = nonEmpty(u.PayerOpenID)
	row.AppID, row.MchID = nonEmpty(u.AppID), nonEmpty(u.MchID)
	// A paid answer without a success_time (or one not RFC 3339) falls
	// back to when WeChat Pay made the notice (or the query was answered):
	// a payment without one would be in no day's totals or reconciliation.
	paidAt := u.SuccessTime
	if paidAt.IsZero() {
		paidAt = u.Notice.CreateTime
	}
	if !paidAt.IsZero() {
		st := dbTime(paidAt)
		row.SuccessTime = &st
	}
}

// duplicatePaymentFlag flags a second, different transaction for an order
// already paid: the customer paid twice and finance must refund one.
func duplicatePaymentFlag(row *paymentRow, u TransactionUpdate) *Anomaly {
	have := deref(row.TransactionID)
	if PaymentState(row.State) != PaymentSuccess || u.TransactionID == "" || have == "" || have == u.TransactionID {
		return nil
	}
	// The second payment's notice is not stored (its transaction rolls
	// back), so the flag carries what finance needs to refund it, in the
	// currency it was paid in: the ledger's check of it (CNY only) is
	// never reached for a payment the ledger does not apply.
	unit := "fen"
	if c := currencyOf(u.Currency); c != ledgerCurrency {
		unit = "in " + truncate(c, 16)
	}
	return &Anomaly{Kind: AnomalyDuplicatePayment, Ref: u.TransactionID, OutTradeNo: row.OutTradeNo,
		Detail: fmt.Sprintf("order %s already paid by %s, paid again by %s: %d %s (payer %d) by %s at %s, notify %s",
			row.OutTradeNo, have, u.TransactionID, u.AmountTotal, unit, u.PayerTotal, u.PayerOpenID,
			u.SuccessTime.UTC().Format(time.RFC3339), u.Notice.NotifyID)}
}

// ledgerCurrency is the only currency the ledger keeps: its amounts are
// fen of CNY (a domestic merchant is paid in nothing else), and finance's
// totals add them up as such.
const ledgerCurrency = "CNY"

// currencyOf is how the ledger writes a stated currency: upper case, and
// CNY when none is stated.
func currencyOf(c string) string {
	if c = strings.ToUpper(strings.TrimSpace(c)); c == "" {
		return ledgerCurrency
	}
	return c
}
