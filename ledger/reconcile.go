package ledger

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"gorm.io/gorm"
)

// Reconciliation statuses. PENDING marks a day claimed before its first
// report was stored; it is never served as a report.
const (
	ReconcileMatched    = "MATCHED"
	ReconcileMismatched = "MISMATCHED"
	ReconcilePending    = "PENDING"
	// ReconcileNoBill: WeChat Pay had no bill of the day and the ledger
	// settled nothing either. The bill may just not be out yet, so the
	// daily job runs such a day again while it is recent (NoBillRecheck).
	ReconcileNoBill = "NO_BILL"
	// ReconcileUnreadable: the parser refused the day's bill, so nothing
	// was compared; the report's BILL_UNREADABLE item says why. A person
	// must act. The daily job runs such a day again once a day
	// (UnreadableRecheck) while it is in its window.
	ReconcileUnreadable = "UNREADABLE"
)

// UnreadableRecheck is how long an UNREADABLE report stands before the
// daily job runs its day again: the bill does not change by itself.
const UnreadableRecheck = 24 * time.Hour

// NoBillRecheckDays is how many of the latest days of the daily window are
// run again while their report is NO_BILL.
const NoBillRecheckDays = 2

// Mismatch kinds a reconciliation reports.
const (
	MismatchPaymentMissingInLedger = "PAYMENT_MISSING_IN_LEDGER" // paid in the bill, absent or not SUCCESS in the ledger
	MismatchPaymentMissingInBill   = "PAYMENT_MISSING_IN_BILL"   // SUCCESS in the ledger that day, absent from the bill
	MismatchPaymentAmount          = "PAYMENT_AMOUNT_MISMATCH"
	MismatchPaymentTransaction     = "PAYMENT_TRANSACTION_MISMATCH" // another transaction_id than the ledger's
	MismatchRefundMissingInLedger  = "REFUND_MISSING_IN_LEDGER"
	MismatchRefundMissingInBill    = "REFUND_MISSING_IN_BILL" // SUCCESS refund of that day (see eachRefundedOn), absent from the bill
	MismatchRefundAmount           = "REFUND_AMOUNT_MISMATCH"
	MismatchRefundState            = "REFUND_STATE_MISMATCH" // SUCCESS in the bill, not in the ledger
	// A bill row with a field no WeChat Pay row can hold (see
	// BillPayment.fault): a row a crafted product name added. It is
	// reported REFUSED, never looked up or repaired.
	MismatchBillRowInvalid = "BILL_ROW_INVALID"
	// The day's bill could not be read (ErrBillUnreadable): the only item
	// of an UNREADABLE report besides earlier repairs, DEFERRED, the
	// parser's error in its detail.
	MismatchBillUnreadable = "BILL_UNREADABLE"
)

// Repair outcomes of a mismatch.
const (
	RepairNone     = ""
	RepairApplied  = "REPAIRED"
	RepairRefused  = "REFUSED"  // the state machine, WeChat Pay's answer or the row's bounds refused it (see detail)
	RepairDeferred = "DEFERRED" // not repaired here; a person or the refund flow acts
)

// ErrBillNotOut: WeChat Pay had no bill of the day, yet the ledger has
// payments or refunds settled that day, so the bill is not out yet (or
// lost at WeChat). Nothing is stored; the run is to be tried again.
var ErrBillNotOut = errors.New("no trade bill of the day, but the ledger has payments or refunds settled that day")

// ErrBillUnreadable: ParseTradeBill refused the bill (its error says which
// line and why). The bill does not change, so running the day again soon
// cannot help: see StoreUnreadable.
var ErrBillUnreadable = errors.New("ledger: trade bill unreadable")

// Reconciliation is the stored report of one business day.
type Reconciliation struct {
	Date           string          `json:"date"`
	Status         string          `json:"status"`
	BillPayments   int             `json:"bill_payments"`
	BillRefunds    int             `json:"bill_refunds"`
	LedgerPayments int             `json:"ledger_payments"`
	LedgerRefunds  int             `json:"ledger_refunds"`
	BillPaid       int64           `json:"bill_paid"`
	BillRefunded   int64           `json:"bill_refunded"`
	LedgerPaid     int64           `json:"ledger_paid"`
	LedgerRefunded int64           `json:"ledger_refunded"`
	Mismatches     int             `json:"mismatches"`
	Repaired       int             `json:"repaired"`
	Runs           int             `json:"runs"`
	RequestedBy    string          `json:"requested_by"`
	CreatedAt      time.Time       `json:"created_at"`
	UpdatedAt      time.Time       `json:"updated_at"`
	Items          []ReconcileItem `json:"items"`
	noBill         bool            // the bill was NO_STATEMENT_EXIST
	unreadable     bool            // the bill could not be read
}

// ReconcileItem is one mismatch with both sides; a nil side is absent.
type ReconcileItem struct {
	Kind          string    `json:"kind"`
	OutTradeNo    string    `json:"out_trade_no"`
	TransactionID string    `json:"transaction_id,omitempty"`
	OutRefundNo   string    `json:"out_refund_no,omitempty"`
	Bill          *ItemSide `json:"bill"`
	Ledger        *ItemSide `json:"ledger"`
	Repair        string    `json:"repair,omitempty"`
	RepairDetail  string    `json:"repair_detail,omitempty"`
}

// ItemSide is what one side says: state, amount in fen, and for the bill
// the raw line.
type ItemSide struct {
	State  string `json:"state"`
	Amount int64  `json:"amount"`
	Line   string `json:"line,omitempty"`
}

type reconciliationRow struct {
	ID             uint64 `gorm:"primaryKey"`
	BillDate       string
	Status         string
	BillPayments   int
	BillRefunds    int
	LedgerPayments int
	LedgerRefunds  int
	BillPaid       int64
	BillRefunded   int64
	LedgerPaid     int64
	LedgerRefunded int64
	Mismatches     int
	Repaired       int
	Runs           int
	RequestedBy    string
	ClaimedBy      *string // the run holding the day's lease
	ClaimedUntil   *time.Time
	CreatedAt      time.Time
	UpdatedAt      time.Time
}

func (reconciliationRow) TableName() string { return "reconciliations" }

type reconcileItemRow struct {
	ID               uint64 `gorm:"primaryKey"`
	ReconciliationID uint64
	Kind             string
	OutTradeNo       string
	TransactionID    string
	OutRefundNo      string
	BillState        string
	BillAmount       *int64
	LedgerState      string
	LedgerAmount     *int64
	BillLine         string
	Repair           string
	RepairDetail     string
}

func (reconcileItemRow) TableName() string { return "reconciliation_items" }

// Reconcile compares the bill of the claimed day with the ledger, repairs
// payments the ledger misses through the state machine (source
// reconcile), and stores the report in place of an earlier one of the
// day, keeping the record of earlier repairs (see saveReconciliation). It
// releases the claim. Errors: ErrClaimed when another run took the claim
// over; ErrBillNotOut when bill is WeChat Pay's "no bill" but the ledger
// settled something that day.
func (s *Store) Reconcile(ctx context.Context, claim *ReconcileClaim, bill *Bill, requestedBy string) (*Reconciliation, error) {
	start, err := DayStart(claim.Day)
	if err != nil {
		return nil, err
	}
	if n := bill.leaveOutOtherApps(); n > 0 {
		slog.InfoContext(ctx, "reconcile: rows of other apps left out", "date", claim.Day, "rows", n, "appid", bill.AppID)
	}
	rep := &Reconciliation{Date: DayOf(start), RequestedBy: requestedBy, BillPayments: len(bill.Payments),
		BillRefunds: len(bill.Refunds), Items: []ReconcileItem{}, noBill: bill.NoStatement}
	if err := s.comparePayments(ctx, rep, bill, start); err != nil {
		return nil, err
	}
	if err := s.compareRefunds(ctx, rep, bill, start); err != nil {
		return nil, err
	}
	// The caller took "no bill" for an empty bill on an earlier read that
	// found nothing settled that day; a payment recorded since (a callback
	// redelivered) is in this one. Reported missing from the bill, it
	// would make the day MISMATCHED, which is final.
	if rep.noBill && len(rep.Items) > 0 {
		return nil, fmt.Errorf("%w: %d payments, %d refunds", ErrBillNotOut, rep.LedgerPayments, rep.LedgerRefunds)
	}
	if err := s.saveReconciliation(ctx, claim, rep); err != nil {
		return nil, err
	}
	return rep, nil
}

// StoreUnreadable stores the report of the claimed day whose bill could
// not be read (cause, a ParseTradeBill error): status UNREADABLE, nothing
// compared, one BILL_UNREADABLE item holding cause cut to its column, and
// the repairs of an earlier report kept (see saveReconciliation). A later
// run that reads the bill replaces it. It releases the claim. Errors:
// ErrClaimed when another run took the claim over.
func (s *Store) StoreUnreadable(ctx context.Context, claim *ReconcileClaim, cause error, requestedBy string) (*Reconciliation, error) {
	// A report of the bill (MATCHED, MISMATCHED) stands: a rerun whose
	// parser now refuses the same bill compared nothing, and must not
	// erase open mismatches and the bill's totals. Only a day without one
	// (never run, NO_BILL, UNREADABLE) is stored UNREADABLE. The claim
	// keeps other runs of the day off meanwhile, and is handed back either
	// way.
	prev, err := s.Reconciliation(ctx, claim.Day)
	switch {
	case err == nil && (prev.Status == ReconcileMatched || prev.Status == ReconcileMismatched):
		return prev, s.ReleaseReconciliation(ctx, claim) // as storing a report would
	case err != nil && !errors.Is(err, ErrNotFound):
		return nil, err
	}
	it := ReconcileItem{Kind: MismatchBillUnreadable, Repair: RepairDeferred, RepairDetail: cause.Error()}
	rep := &Reconciliation{Date: claim.Day, RequestedBy: requestedBy, Items: []ReconcileItem{it.fitted()},
		unreadable: true}
	if err := s.saveReconciliation(ctx, claim, rep); err != nil {
		return nil, err
	}
	return rep, nil
}

// tally counts the items and sets the status.
func (rep *Reconciliation) tally() {
	rep.Repaired = 0
	for _, it := range rep.Items {
		if it.Repair == RepairApplied {
			rep.Repaired++
		}
	}
	rep.Mismatches, rep.Status = len(rep.Items), ReconcileMatched
	switch {
	case rep.unreadable:
		rep.Status = ReconcileUnreadable
	case rep.Mismatches > 0:
		rep.Status = ReconcileMismatched
	case rep.noBill:
		rep.Status = ReconcileNoBill
	}
}

func (s *Store) comparePayments(ctx context.Context, rep *Reconciliation, bill *Bill, start time.Time) error {
	payments := rep.validPayments(bill.Payments)
	keys := make([]string, len(payments))
	for i, p := range payments {
		keys[i] = p.OutTradeNo
	}
	ledger, err := s.paymentsByNo(ctx, keys)
	if err != nil {
		return err
	}
	seen := map[string]bool{}
	var matched []BillPayment
	for _, bp := range payments {
		seen[bp.OutTradeNo] = true
		it, err := s.checkPayment(ctx, bp, ledger[bp.OutTradeNo], bill)
		if err != nil {
			return err
		}
		if it != nil {
			rep.Items = append(rep.Items, *it)
		} else {
			matched = append(matched, bp)
		}
	}
	earlier, err := s.earlierRepairs(ctx, matched, ledger)
	if err != nil {
		return err
	}
	rep.Items = append(rep.Items, earlier...)
	q := ListQuery{State: string(PaymentSuccess)}
	err = eachPaidOn(ctx, s.db, start, q, func(p PaymentListItem) error {
		rep.LedgerPayments++
		rep.LedgerPaid += p.AmountTotal
		if !seen[p.OutTradeNo] {
			rep.Items = append(rep.Items, ReconcileItem{Kind: MismatchPaymentMissingInBill, OutTradeNo: p.OutTradeNo,
				TransactionID: p.TransactionID, Ledger: &ItemSide{State: string(p.State), Amount: p.AmountTotal}})
		}
		return nil
	})
	return err
}

// validPayments adds the bill's payments to the bill's total, reports the
// rows no WeChat Pay payment can be and returns the others: only those
// are looked up, confirmed and repaired.
func (rep *Reconciliation) validPayments(rows []BillPayment) []BillPayment {
	var valid []BillPayment
	seen := map[string]bool{}
	for _, bp := range rows {
		rep.BillPaid += bp.Amount
		why := bp.fault()
		if why == "" && seen[bp.OutTradeNo] {
			// WeChat Pay's bill has one payment row per order: a second
			// (crafted) one would be checked against the same read of
			// the ledger and counted, or flagged, twice.
			why = "a second payment row of the order"
		}
		seen[bp.OutTradeNo] = true
		if why != "" {
			rep.Items = append(rep.Items, invalidRow(ReconcileItem{OutTradeNo: bp.OutTradeNo, TransactionID: bp.TransactionID,
				Bill: &ItemSide{State: "SUCCESS", Amount: bp.Amount, Line: bp.Line}}, why))
			continue
		}
		valid = append(valid, bp)
	}
	return valid
}

// validRefunds is validPayments for the bill's refunds. Only a SUCCESS row
// adds to bill_refunded: like ledger_refunded, it is money refunded, and a
// row still PROCESSING or closed moved none (it is checked all the same).
func (rep *Reconciliation) validRefunds(rows []BillRefund) []BillRefund {
	var valid []BillRefund
	for _, br := range rows {
		if br.Status == string(RefundSuccess) {
			rep.BillRefunded += br.Amount
		}
		if why := br.fault(); why != "" {
			rep.Items = append(rep.Items, invalidRow(ReconcileItem{OutTradeNo: br.OutTradeNo, TransactionID: br.TransactionID,
				OutRefundNo: br.OutRefundNo, Bill: &ItemSide{State: br.Status, Amount: br.Amount, Line: br.Line}}, why))
			continue
		}
		valid = append(valid, br)
	}
	return valid
}

// invalidRow is the item of a bill row no WeChat Pay row can be, cut to the
// report's columns here rather than on storing, so that the report
// returned is the one stored and a rerun finds the same item again.
func invalidRow(it ReconcileItem, why string) ReconcileItem {
	it.Kind, it.Repair = MismatchBillRowInvalid, RepairRefused
	it.RepairDetail = "not a WeChat Pay row (" + why + "): not looked up, not repaired"
	return it.fitted()
}

// eachPaidOn streams the SUCCESS payments whose success_time falls on the
// business day starting at start.
func eachPaidOn(ctx context.Context, db *gorm.DB, start time.Time, q ListQuery, fn func(PaymentListItem) error) error {
	spec := paymentsSpec
	spec.timeCol, spec.timeIndexed = "success_time", true // idx_payments_success_time
	q.From, q.To = start, start.Add(24*time.Hour)
	return eachByPage(ctx, db, spec, q, func(r paymentRow) PaymentListItem {
		return PaymentListItem{ID: r.ID, Payment: *r.payment()}
	}, func(p PaymentListItem) uint64 { return p.ID }, fn)
}

func (s *Store) checkPayment(ctx context.Context, bp BillPayment, lp *Payment, bill *Bill) (*ReconcileItem, error) {
	takeOver := bill.TakeOver
	it := &ReconcileItem{OutTradeNo: bp.OutTradeNo, TransactionID: bp.TransactionID,
		Bill: &ItemSide{State: "SUCCESS", Amount: bp.Amount, Line: bp.Line}}
	if lp != nil {
		it.Ledger = &ItemSide{State: string(lp.State), Amount: ledgerAmount(lp)}
	}
	// Confirm pins a row's time only to within BillTimeSlack of WeChat
	// Pay's success_time, so a row that close after the take-over may be a
	// payment from before it: repaired rows are paid after the take-over.
	switch {
	case lp == nil && bp.Time.Before(takeOver.Add(BillTimeSlack)):
		it.Kind, it.Repair = MismatchPaymentMissingInLedger, RepairDeferred
		it.RepairDetail = "paid before the gateway took over at " + takeOver.Format(time.RFC3339) +
			" (finance.reconcile_from, else the ledger's first payment): not repaired"
	case lp == nil || lp.State != PaymentSuccess:
		it.Kind = MismatchPaymentMissingInLedger
		confirmed, err := confirmRow(ctx, bill, bp)
		if errors.Is(err, ErrBillUnconfirmed) {
			it.Repair, it.RepairDetail = RepairRefused, truncate(err.Error(), itemDetailWidth)
			return it, nil
		} else if err != nil {
			return nil, err
		}
		if it.Repair, it.RepairDetail, err = s.repairPayment(ctx, bp, confirmed); err != nil {
			return nil, err
		}
		if it.Repair == "" { // recorded meanwhile: compare with what was recorded
			now, err := s.Payment(ctx, bp.OutTradeNo)
			if err != nil {
				return nil, fmt.Errorf("read payment %s again: %w", bp.OutTradeNo, err)
			}
			if now.State == PaymentSuccess {
				return s.checkPayment(ctx, bp, now, bill)
			}
			it.Repair, it.RepairDetail = RepairRefused, "its notice is recorded already, the payment is "+string(now.State)
		}
	case lp.TransactionID != bp.TransactionID:
		it.Kind, it.Repair = MismatchPaymentTransaction, RepairDeferred
		it.RepairDetail = "ledger has transaction " + lp.TransactionID
	case lp.AmountTotal != bp.Amount:
		it.Kind, it.Repair = MismatchPaymentAmount, RepairDeferred
	case currencyOf(bp.Currency) != currencyOf(lp.Currency):
		// The same number in another currency is another amount.
		it.Kind, it.Repair = MismatchPaymentAmount, RepairDeferred
		it.RepairDetail = truncate("the bill says "+currencyOf(bp.Currency)+", the ledger "+currencyOf(lp.Currency), itemDetailWidth)
	default:
		return nil, nil
	}
	return it, nil
}

// confirmRow asks bill.Confirm, when set, about a row to repair. Without
// it the row is all there is: the payer paid the order total.
func confirmRow(ctx context.Context, bill *Bill, bp BillPayment) (Confirmed, error) {
	if bill.Confirm == nil {
		return Confirmed{PayerTotal: bp.Amount}, nil
	}
	c, err := bill.Confirm(ctx, bp)
	if err != nil {
		return c, fmt.Errorf("confirm bill payment %s (transaction %s): %w", bp.OutTradeNo, bp.TransactionID, err)
	}
	return c, nil
}

func ledgerAmount(p *Payment) int64 {
	if p.AmountTotal != 0 {
		return p.AmountTotal
	}
	return p.ExpectedAmount
}

func (s *Store) paymentsByNo(ctx context.Context, keys []string) (map[string]*Payment, error) {
	out := map[string]*Payment{}
	for len(keys) > 0 {
		n := min(len(keys), 500)
		var rows []paymentRow
		if err := s.db.WithContext(ctx).Where("out_trade_no IN ?", keys[:n]).Find(&rows).Error; err != nil {
			return nil, fmt.Errorf("read payments for reconciliation: %w", err)
		}
		for i := range rows {
			out[rows[i].OutTradeNo] = rows[i].payment()
		}
		keys = keys[n:]
	}
	return out, nil
}

func (s *Store) refundsByNo(ctx context.Context, keys []string) (map[string]RefundListItem, error) {
	out := map[string]RefundListItem{}
	for len(keys) > 0 {
		n := min(len(keys), 500)
		var rows []refundRow
		if err := s.db.WithContext(ctx).Where("out_refund_no IN ?", keys[:n]).Find(&rows).Error; err != nil {
			return nil, fmt.Errorf("read refunds for reconciliation: %w", err)
		}
		for _, r := range rows {
			out[r.OutRefundNo] = r.item()
		}
		keys = keys[n:]
	}
	return out, nil
}

func (s *Store) compareRefunds(ctx context.Context, rep *Reconciliation, bill *Bill, start time.Time) error {
	refunds := rep.validRefunds(bill.Refunds)
	keys := make([]string, len(refunds))
	for i, r := range refunds {
		keys[i] = r.OutRefundNo
	}
	ledger, err := s.refundsByNo(ctx, keys)
	if err != nil {
		return err
	}
	seen := map[string]bool{}
	for _, br := range refunds {
		seen[br.OutRefundNo] = true
		if it := checkRefund(br, ledger); it != nil {
			rep.Items = append(rep.Items, *it)
		}
	}
	return eachRefundedOn(ctx, s.db, start, func(r RefundListItem) error {
		rep.LedgerRefunds++
		rep.LedgerRefunded += r.Amount
		if !seen[r.OutRefundNo] {
			rep.Items = append(rep.Items, ReconcileItem{Kind: MismatchRefundMissingInBill, OutTradeNo: r.OutTradeNo,
				TransactionID: r.TransactionID, OutRefundNo: r.OutRefundNo, Repair: RepairDeferred,
				Ledger: &ItemSide{State: r.State, Amount: r.Amount}})
		}
		return nil
	})
}

// eachRefundedOn streams the SUCCESS refunds of the business day starting
// at start: those WeChat Pay accepted that day (the day its bill lists
// them), and those it never told the gateway when it accepted created
// that day. A refund recorded at 23:59 that WeChat accepts after midnight
// belongs to the next day, as in the bill.
func eachRefundedOn(ctx context.Context, db *gorm.DB, start time.Time, fn func(RefundListItem) error) error {
	end := start.Add(24 * time.Hour)
	on := func(t time.Time) bool { return !t.Before(start) && t.Before(end) }
	q := ListQuery{State: string(RefundSuccess), From: start, To: end}
	// The two reads are not one snapshot: a refund that succeeds between
	// them is in the second only, so the second skips what the first
	// streamed, not every refund recorded that day.
	streamed := map[uint64]bool{}
	refundID := func(r RefundListItem) uint64 { return r.ID }
	err := eachByPage(ctx, db, refundsSpec, q, refundRow.item, refundID, func(r RefundListItem) error {
		if r.AcceptedAt != nil && !on(*r.AcceptedAt) {
			return nil // another day's: accepted before or after this one
		}
		streamed[r.ID] = true
		return fn(r)
	})
	if err != nil {
		return err
	}
	spec := refundsSpec
	spec.timeCol, spec.timeIndexed = "accepted_at", false // on (state, accepted_at)
	return eachByPage(ctx, db, spec, q, refundRow.item, refundID, func(r RefundListItem) error {
		if streamed[r.ID] {
			return nil
		}
		return fn(r)
	})
}

func checkRefund(br BillRefund, ledger map[string]RefundListItem) *ReconcileItem {
	it := &ReconcileItem{OutTradeNo: br.OutTradeNo, TransactionID: br.TransactionID, OutRefundNo: br.OutRefundNo,
		Bill: &ItemSide{State: br.Status, Amount: br.Amount, Line: br.Line}, Repair: RepairDeferred}
	lr, ok := ledger[br.OutRefundNo]
	if ok {
		it.Ledger = &ItemSide{State: lr.State, Amount: lr.Amount}
	}
	switch {
	case !ok:
		it.Kind = MismatchRefundMissingInLedger
	case lr.Amount != br.Amount:
		it.Kind = MismatchRefundAmount
	case br.Status == "SUCCESS" && lr.State != "SUCCESS":
		it.Kind = MismatchRefundState
	default:
		return nil
	}
	return it
}
