package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"paygateway/ledger"
)

// BillSource downloads WeChat Pay trade bills. When WeChat Pay has no bill
// of the day (NO_STATEMENT_EXIST) the error matches ErrNoStatement.
type BillSource interface {
	TradeBill(ctx context.Context, billDate string) ([]byte, error)
}

// ErrNoStatement means WeChat Pay has no trade bill of the day: either
// nothing moved that day or the bill is not generated yet.
var ErrNoStatement = errors.New("no trade bill of the day")

// ErrBillTooLarge means the day's trade bill is larger than the gateway
// reconciles (it holds a bill in memory). Trying again soon cannot help.
var ErrBillTooLarge = errors.New("trade bill too large to reconcile")

// Reconciler compares WeChat Pay's trade bill of a day with the ledger.
type Reconciler struct {
	Store   *ledger.Store
	Bills   BillSource
	Timeout time.Duration // bounds one run, bill download included; default 10 min
	// TakeOver, when set, is when the gateway began taking the merchant's
	// payments: see ledger.Bill.TakeOver. The daily job starts on its day.
	TakeOver time.Time
	// AppID, when set, is this gateway's app: see ledger.Bill.AppID.
	AppID string
	// Confirm, when set, asks WeChat Pay about a bill payment before it is
	// repaired: see ledger.Bill.Confirm.
	Confirm func(ctx context.Context, bp ledger.BillPayment) (ledger.Confirmed, error)
	// Refunds, when set, is asked when it accepted the day's refunds the
	// ledger has no acceptance time for (see learnAcceptance).
	Refunds RefundAPI
}

// maxAcceptanceQueries bounds the refund queries of one run, and
// acceptanceBudget their time, so that a slow WeChat Pay cannot use up the
// run's time before the bill is downloaded.
const (
	maxAcceptanceQueries = 100
	acceptanceBudget     = time.Minute
)

// DefaultReconcileTimeout leaves room for a 5 min bill download.
const DefaultReconcileTimeout = 10 * time.Minute

// limit bounds one run.
func (r *Reconciler) limit() time.Duration {
	if r.Timeout > 0 {
		return r.Timeout
	}
	return DefaultReconcileTimeout
}

// claimMargin keeps a day's lease past the end of its run, so a live run
// never loses it to another instance.
const claimMargin = time.Minute

// Run downloads and parses the bill of day ("YYYY-MM-DD", UTC+8, before
// today), compares it with the ledger, repairs missing payments and stores
// the report (replacing an earlier one of the same day, but keeping its
// repairs). It holds the day's lease in the ledger throughout, so one run
// per day goes at a time across instances; another gets 409 EIN_FLIGHT.
func (r *Reconciler) Run(ctx context.Context, day, requestedBy string) (*ledger.Reconciliation, error) {
	day, err := parsePastDay(day, r.Store.Now())
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, r.limit())
	defer cancel()
	claim, err := r.Store.ClaimReconciliation(ctx, day, r.limit()+claimMargin)
	if err != nil {
		return nil, reconcileError(day, err)
	}
	rep, err := r.runClaimed(ctx, claim, requestedBy)
	if err != nil {
		r.release(ctx, claim)
		return nil, err
	}
	slog.InfoContext(ctx, "reconciliation done", "date", day, "status", rep.Status, "mismatches", rep.Mismatches,
		"repaired", rep.Repaired, "bill_payments", rep.BillPayments, "bill_refunds", rep.BillRefunds)
	return rep, nil
}

func (r *Reconciler) runClaimed(ctx context.Context, claim *ledger.ReconcileClaim, requestedBy string) (*ledger.Reconciliation, error) {
	r.learnAcceptance(ctx, claim.Day)
	bill, err := r.bill(ctx, claim.Day)
	if errors.Is(err, ledger.ErrBillUnreadable) {
		return nil, r.storeUnreadable(ctx, claim, requestedBy, err)
	}
	if err != nil {
		return nil, err
	}
	if bill.TakeOver, err = r.takeOver(ctx); err != nil {
		return nil, reconcileError(claim.Day, err) // 503, as the run's other ledger failures
	}
	bill.AppID, bill.Confirm = r.AppID, r.Confirm
	rep, err := r.Store.Reconcile(ctx, claim, bill, requestedBy)
	if err != nil {
		return nil, reconcileError(claim.Day, err)
	}
	return rep, nil
}

// storeUnreadable stores the UNREADABLE report of a day whose bill the
// parser refuses, so that it shows in GET /v1/reconciliations/{date}, and
// answers EBILL_UNREADABLE (matching ledger.ErrBillUnreadable): the bill
// does not change, so the daily job runs the day again a day later, not
// within hours, and a person must look at it meanwhile.
func (r *Reconciler) storeUnreadable(ctx context.Context, claim *ledger.ReconcileClaim, requestedBy string, cause error) error {
	rep, err := r.Store.StoreUnreadable(ctx, claim, cause, requestedBy)
	if err != nil {
		return reconcileError(claim.Day, err)
	}
	if rep.Status != ledger.ReconcileUnreadable { // an earlier report of the bill stands
		return Errorf(CodeBillUnreadable, "the trade bill of "+claim.Day+" cannot be read; the day's earlier "+
			rep.Status+" report stands (GET /v1/reconciliations/"+claim.Day+"): a person must look at the bill", cause)
	}
	return Errorf(CodeBillUnreadable, "the trade bill of "+claim.Day+" cannot be read; its report is stored "+
		"UNREADABLE with the reason (GET /v1/reconciliations/"+claim.Day+"): a person must look at the bill", cause)
}

// takeOver is when the gateway began taking payments: TakeOver when set,
// else when the ledger recorded its first payment or order, and for an
// empty ledger now. A bill payment from before it that the ledger does not
// know was taken, and fulfilled, by the system that ran before: the run
// reports it DEFERRED instead of recording it and confirming its stock a
// second time. This holds for the first day's morning, and for a day
// before the first payment run by hand, which the daily job never runs.
func (r *Reconciler) takeOver(ctx context.Context) (time.Time, error) {
	if !r.TakeOver.IsZero() {
		return r.TakeOver, nil
	}
	first, ok, err := r.Store.FirstPaymentTime(ctx)
	if err != nil {
		return time.Time{}, fmt.Errorf("read when the ledger took its first payment: %w", err)
	}
	if !ok {
		return r.Store.Now(), nil
	}
	return first, nil
}

// learnAcceptance asks WeChat Pay when it accepted the SUCCESS refunds the
// ledger recorded on day without knowing that (settled by a notification,
// which does not say): a refund recorded at 23:59 and accepted after
// midnight is in the next day's bill, and must not be reported missing
// from this one. A refund it cannot learn about stays filed under the day
// it was recorded.
func (r *Reconciler) learnAcceptance(ctx context.Context, day string) {
	if r.Refunds == nil {
		return
	}
	nos, err := r.Store.RefundsWithoutAcceptance(ctx, day, maxAcceptanceQueries)
	if err != nil {
		slog.WarnContext(ctx, "reconciliation: refunds without an acceptance time not read", "date", day, "err", err)
		return
	}
	ctx, cancel := context.WithTimeout(ctx, acceptanceBudget)
	defer cancel()
	for _, no := range nos {
		wx, err := r.Refunds.QueryRefund(ctx, no)
		if err == nil && wx.OutRefundNo == no && !wx.CreateTime.IsZero() {
			err = r.Store.NoteRefundAccepted(ctx, no, wx.CreateTime)
		}
		if err != nil {
			slog.WarnContext(ctx, "reconciliation: acceptance time of a refund not learnt", "date", day, "out_refund_no", no, "err", err)
		}
		if errors.Is(err, ErrOutcomeUnknown) || ctx.Err() != nil {
			return // WeChat Pay is not answering: the rest would only wait too
		}
	}
}

// release hands a failed run's lease back, even when ctx has ended, so
// the day can be retried at once rather than when the lease runs out.
func (r *Reconciler) release(ctx context.Context, claim *ledger.ReconcileClaim) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := r.Store.ReleaseReconciliation(ctx, claim); err != nil {
		slog.WarnContext(ctx, "reconciliation lease not released; it runs out by itself", "date", claim.Day, "err", err)
	}
}

func reconcileError(day string, err error) error {
	switch {
	case errors.Is(err, ledger.ErrClaimed):
		return Errorf(CodeInFlight, "the reconciliation of "+day+" is running elsewhere; try again when it ends", err)
	case errors.Is(err, ledger.ErrBillNotOut):
		return billNotOut(day, err)
	}
	return ledgerError(fmt.Errorf("reconcile %s: %w", day, err))
}

// billNotOut: WeChat Pay has no bill of day, but the ledger settled
// something that day. The run fails, stores nothing, and is tried again.
func billNotOut(day string, cause error) error {
	return Errorf(CodeUnavailable, "WeChat Pay has no trade bill of "+day+
		" yet, but the ledger has payments or refunds settled that day; try again later", cause)
}

// bill downloads and parses the trade bill of day. A bill the parser
// refuses fails with the parser's error (ledger.ErrBillUnreadable).
func (r *Reconciler) bill(ctx context.Context, day string) (*ledger.Bill, error) {
	data, err := r.Bills.TradeBill(ctx, day)
	if errors.Is(err, ErrNoStatement) {
		return r.emptyBill(ctx, day, err)
	}
	if errors.Is(err, ErrBillTooLarge) {
		return nil, Errorf(CodeUnprocessable, "the trade bill of "+day+" is larger than the gateway reconciles; "+
			"reconcile that day by other means", err)
	}
	if err != nil {
		return nil, Errorf(CodeUnavailable, "could not download the trade bill of "+day, err)
	}
	return ledger.ParseTradeBill(data)
}

// emptyBill takes WeChat's "no bill" as an empty bill only when the ledger
// has nothing settled that day either. Otherwise the bill is not generated
// yet (or lost at WeChat): reconciling against nothing would report every
// payment missing, so the day fails and is tried again.
func (r *Reconciler) emptyBill(ctx context.Context, day string, cause error) (*ledger.Bill, error) {
	settled, err := r.Store.HasSettlements(ctx, day)
	if err != nil {
		return nil, ledgerError(fmt.Errorf("reconcile %s: %w", day, err))
	}
	if settled {
		return nil, billNotOut(day, cause)
	}
	// Settled meanwhile, the day fails all the same: see ledger.ErrBillNotOut.
	return &ledger.Bill{NoStatement: true}, nil
}

type reconcileRequest struct {
	Date string `json:"date"`
}

// runReconciliation runs the reconciliation of a day now and answers the
// report. Running a day again replaces its report but keeps its repairs;
// while another run holds the day the answer is 409 EIN_FLIGHT, and while
// another run asked of this instance goes on, 429.
func (f *Finance) runReconciliation(d *Deps) gin.HandlerFunc {
	return func(c *gin.Context) {
		var req reconcileRequest
		if err := DecodeJSON(c, d.MaxBodyBytes, &req); err != nil {
			writeError(c, err)
			return
		}
		day, err := parsePastDay(req.Date, d.Store.Now())
		if err == nil {
			err = auditTarget(c, d.Store, "date="+day)
		}
		if err != nil {
			writeError(c, err)
			return
		}
		if f.Reconciler == nil {
			writeError(c, &Error{Code: CodeUnavailable, Message: "reconciliation is not configured (wechatpay merchant key and serial)"})
			return
		}
		if !f.runs.take() {
			writeError(c, runsBusy)
			return
		}
		defer f.runs.give()
		// A big bill may take longer than the server's WriteTimeout.
		deadline := time.Now().Add(f.Reconciler.limit() + 30*time.Second)
		_ = http.NewResponseController(c.Writer).SetWriteDeadline(deadline)
		rep, err := f.Reconciler.Run(c.Request.Context(), day, CurrentPrincipal(c).Name)
		if err != nil {
			writeError(c, err)
			return
		}
		c.JSON(http.StatusOK, rep)
	}
}

// getReconciliation serves a stored report as JSON, or its mismatches as
// CSV.
func (d *Deps) getReconciliation(c *gin.Context) {
	if err := onlyParams(c, "format"); err != nil {
		writeError(c, err)
		return
	}
	day, err := parseDay(c.Param("date"), d.Store.Now())
	if err != nil {
		writeError(c, err)
		return
	}
	rep, err := d.Store.Reconciliation(c.Request.Context(), day)
	if err != nil {
		writeError(c, ledgerError(err))
		return
	}
	if !csvRequested(c) {
		c.JSON(http.StatusOK, rep)
		return
	}
	out := startCSV(c, "reconciliation-"+day+".csv", []string{"date", "kind", "out_trade_no", "transaction_id",
		"out_refund_no", "bill_state", "bill_amount", "ledger_state", "ledger_amount", "repair", "repair_detail", "bill_line"})
	for _, it := range rep.Items {
		row := []string{day, it.Kind, cell(it.OutTradeNo), cell(it.TransactionID), cell(it.OutRefundNo), "", "", "", "",
			it.Repair, cell(it.RepairDetail), ""}
		if it.Bill != nil {
			row[5], row[6], row[11] = cell(it.Bill.State), num(it.Bill.Amount), cell(it.Bill.Line)
		}
		if it.Ledger != nil {
			row[7], row[8] = cell(it.Ledger.State), num(it.Ledger.Amount)
		}
		_ = out.write(row)
	}
	_ = out.finish()
}
