// Package compensate finds registered orders whose payment callback never
// arrived, asks WeChat Pay about them and applies the answer through the
// ledger's state machine, as a callback would, marked as coming from a
// query. Unpaid orders past their expire_at are closed at WeChat Pay first
// (so nobody can pay them any more), then in the ledger from what WeChat
// Pay says after the close: an order paid at the last moment is recorded
// as paid, never closed.
//
// Several gateway instances may run it at once: every effect goes through
// a unique notice id or a conditional state change, so the worst case is a
// duplicate query, never a duplicate effect.
package compensate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"paygateway/gateway/wechatpay"
	"paygateway/ledger"
)

// Querier asks WeChat Pay about an order and closes unpaid ones
// (*wechatpay.Client).
type Querier interface {
	QueryOrder(ctx context.Context, outTradeNo string) (*wechatpay.Transaction, error)
	CloseOrder(ctx context.Context, outTradeNo string) error
}

var _ Querier = (*wechatpay.Client)(nil)

// Config tunes the job.
type Config struct {
	Interval     time.Duration // between runs
	SafetyBuffer time.Duration // how old an order must be before it is queried; never zero
	// MaxInterval bounds the wait between two checks of one order (they
	// space out as it ages: a quarter of its age, at least Interval).
	MaxInterval time.Duration
	Batch       int    // orders read per page
	MchID       string // answers for another merchant are ignored
	// AppID, when set, is this gateway's app: an answer naming another
	// is refused, as a callback naming another is.
	AppID string
	// CheckTimeout bounds one order's check (default 45 s; tests shorten it).
	CheckTimeout time.Duration
	// Observe, if set, is told each check's result (Recovered, Closed,
	// Open, Failed, Mismatch or Limited), for metrics.
	Observe func(result string)
}

// Check results. Recovered is the lost callback this job exists for: a
// payment WeChat Pay took that the ledger had not recorded.
const (
	Recovered = "recovered"
	Closed    = "closed"
	Open      = "open"
	Failed    = "failed"
	// Mismatch: WeChat Pay says the order was paid in a currency other
	// than CNY. The ledger refuses it and flags it for a person; the
	// order is asked about again daily, not every run. (One paid another
	// amount in CNY is Recovered: recorded with what was paid, flagged
	// AMOUNT_MISMATCH, its stock confirmation held for a person.)
	Mismatch = "mismatch"
	// Limited: WeChat Pay answered that the merchant is over its query
	// quota. The run ends there, the order handed back for the next run:
	// querying on would keep the merchant over the quota that refunds and
	// reconciliation share.
	Limited = "limited"
)

// Job is the lost-callback compensation.
type Job struct {
	cfg   Config
	store *ledger.Store
	wx    Querier
	log   *slog.Logger
}

// New returns the job.
func New(cfg Config, store *ledger.Store, wx Querier) *Job {
	if cfg.Batch <= 0 {
		cfg.Batch = 100
	}
	if cfg.Interval <= 0 {
		cfg.Interval = time.Minute
	}
	if cfg.CheckTimeout <= 0 {
		cfg.CheckTimeout = checkTimeout
	}
	if cfg.MaxInterval < cfg.Interval {
		cfg.MaxInterval = max(cfg.Interval, 10*time.Minute)
	}
	return &Job{cfg: cfg, store: store, wx: wx, log: slog.Default()}
}

// Run runs the job every Interval until ctx ends.
func (j *Job) Run(ctx context.Context) {
	t := time.NewTicker(j.cfg.Interval)
	defer t.Stop()
	for {
		if _, err := j.RunOnce(ctx); err != nil && ctx.Err() == nil {
			j.log.Warn("compensate: run failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// pageTimeout bounds reading one page of orders; checkTimeout one order's
// check (query, maybe close and query again, and the ledger write), so a
// hung database or WeChat Pay holds a connection for a bounded time.
const (
	pageTimeout  = 10 * time.Second
	checkTimeout = 45 * time.Second
)

// RunOnce checks every order awaiting payment whose check is due (first
// once it is older than the safety buffer, then spaced out as it ages)
// and returns how many it changed in the ledger. Each order's next check
// is scheduled before it is checked, so the next page holds the next orders.
//
// A run is one pass: it checks each order at most once. A pass can last
// longer than max_interval (many open orders, or a slow WeChat Pay: each
// check may take up to CheckTimeout), so the orders checked first come due
// again before it ends; were they checked again, every page would stay
// full and the run would never end. So the run ends at the first page that
// lists an order it has already listed, after checking that page's other
// orders. The pages are sorted by when each order came due (orders never
// checked first: SQLite and MariaDB/MySQL sort a NULL next_check_at
// first, which TestNeverCheckedOrdersAreListedFirst holds; then by
// next_check_at), and an order checked in this run
// is due again only after the run began, so every order due when the run
// began has been checked by then; the orders due again are left to the
// next run, which Run starts at once when this one outlasted its
// interval. A run thus makes at most one check per order open during it,
// and ends once it has checked the orders due (it runs on only while new
// orders keep coming due faster than it can check them, checking them).
//
// The safety-buffer cutoff is read again for every page, not once per run:
// an order registered while a long run goes on comes due within it, and
// since orders never checked come first it is checked on the next page,
// not after the whole backlog (its lost callback is recovered in minutes).
func (j *Job) RunOnce(ctx context.Context) (int, error) {
	changed := 0
	listed := map[string]bool{} // every order this run has listed
	for ctx.Err() == nil {
		cutoff := j.store.Now().Add(-j.cfg.SafetyBuffer)
		pctx, cancel := context.WithTimeout(ctx, pageTimeout)
		page, err := j.store.AwaitingPayment(pctx, cutoff, j.cfg.Batch)
		cancel()
		if err != nil {
			return changed, err
		}
		passDone := len(page) < j.cfg.Batch
		for _, p := range page {
			if listed[p.OutTradeNo] { // due again: the pass is over
				passDone = true
				continue
			}
			listed[p.OutTradeNo] = true
			claimed, err := j.claim(ctx, p, cutoff) // else the same orders would come back in this run
			if err != nil {
				return changed, err
			}
			if !claimed { // another instance checks it (or it was paid meanwhile)
				continue
			}
			cctx, cancel := context.WithTimeout(ctx, j.cfg.CheckTimeout)
			result := j.check(cctx, p)
			cancel()
			if (result == Failed && ctx.Err() != nil) || result == Limited { // cut short by shutdown, or the quota
				j.giveBack(ctx, p)
			}
			if result == Mismatch {
				j.recheckMismatch(ctx, p)
			}
			if result == Recovered || result == Closed {
				changed++
			}
			if j.cfg.Observe != nil {
				j.cfg.Observe(result)
			}
			if result == Limited {
				return changed, nil
			}
		}
		if passDone {
			break
		}
	}
	return changed, ctx.Err()
}

// claim sets the order's next check before this one runs, if no other
// instance did since the page was read: a check that outlasts its time (a
// slow WeChat Pay) cannot leave the order first in line for every later
// run, and other instances leave it alone meanwhile.
func (j *Job) claim(ctx context.Context, p ledger.Payment, cutoff time.Time) (bool, error) {
	sctx, cancel := context.WithTimeout(ctx, pageTimeout)
	defer cancel()
	return j.store.ClaimCheck(sctx, p.OutTradeNo, cutoff, j.nextCheck(p, j.store.Now()))
}

// giveBack hands the claim of a check that shutdown cut short back, so
// another instance takes the order up at once.
func (j *Job) giveBack(ctx context.Context, p ledger.Payment) {
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), pageTimeout)
	defer cancel()
	if err := j.store.ReleaseCheck(sctx, p.OutTradeNo); err != nil {
		j.log.Warn("compensate: check not handed back; it is due again at its time", "out_trade_no", p.OutTradeNo, "err", err)
	}
}

// mismatchRecheck is how long an order paid in another currency than
// CNY waits for its next check: a person settles it (the anomaly
// says so), and asking every run would spend WeChat Pay's query quota on
// it for good.
const mismatchRecheck = 24 * time.Hour

func (j *Job) recheckMismatch(ctx context.Context, p ledger.Payment) {
	sctx, cancel := context.WithTimeout(ctx, pageTimeout)
	defer cancel()
	if err := j.store.ScheduleCheck(sctx, p.OutTradeNo, j.store.Now().Add(mismatchRecheck)); err != nil {
		j.log.Warn("compensate: schedule the next check of a mismatched order", "out_trade_no", p.OutTradeNo, "err", err)
	}
}

// nextCheck spaces an open order's checks out as it ages: a lost callback
// is most likely soon after the order is made; an order open for hours
// (an abandoned cart, a far expire_at) need not cost a WeChat Pay query
// every minute. The wait is a quarter of the order's age, between
// Interval and MaxInterval, and never past its expire_at, when the order
// must be closed.
func (j *Job) nextCheck(p ledger.Payment, now time.Time) time.Time {
	wait := min(max(now.Sub(p.CreatedAt)/4, j.cfg.Interval), j.cfg.MaxInterval)
	next := now.Add(wait)
	if p.ExpireAt != nil && p.ExpireAt.After(now) && p.ExpireAt.Before(next) {
		next = *p.ExpireAt
	}
	return next
}

// check queries one order and applies the answer; a failed query is
// logged and left for the next run (the callback may still arrive).
func (j *Job) check(ctx context.Context, p ledger.Payment) string {
	log := j.log.With("out_trade_no", p.OutTradeNo)
	tx, err := j.wx.QueryOrder(ctx, p.OutTradeNo)
	switch {
	case errors.Is(err, wechatpay.ErrRateLimited):
		log.Warn("compensate: WeChat Pay rate-limits the order query; the run stops here", "err", err)
		return Limited
	case errors.Is(err, wechatpay.ErrNotFound):
		// Not seen by WeChat Pay (yet: the prepay may be in flight, or be
		// made late): closed there too at its expire_at, so that it cannot
		// be paid after the ledger closed it.
		return j.closeAtWechat(ctx, log, p)
	case err != nil:
		log.Warn("compensate: query order failed", "err", err)
		return Failed
	case j.foreign(log, tx), otherOrder(log, p, tx):
		return Failed
	}
	switch tx.TradeState {
	case "NOTPAY", "PAYERROR", "REVOKED":
		// Unpaid, and not closed at WeChat Pay: a failed or revoked
		// attempt is no close there, so the order is closed like an
		// unpaid one, at its expire_at and at WeChat Pay first.
		return j.closeAtWechat(ctx, log, p)
	case "SUCCESS", "REFUND", "CLOSED":
		return j.apply(ctx, log, tx)
	}
	return Open // USERPAYING and the like: not final, ask again next run
}

// closeAtWechat leaves an unpaid order (NOTPAY, PAYERROR, REVOKED, or one
// WeChat Pay does not know) open until its expire_at, then closes it at
// WeChat Pay, asks again and applies what WeChat Pay says: CLOSED closes
// it in the ledger, and so does "not found" again, or a PAYERROR or
// REVOKED still answered after a close WeChat Pay answered; SUCCESS (paid
// between the query and the close) records the payment. Whatever the
// close answered (ORDERPAID, not found…), only the second query decides;
// a still open order, or a PAYERROR or REVOKED after a close whose outcome
// is unknown, is tried again next run. After a close WeChat Pay refused
// signed as ORDERPAID, only a paid answer (SUCCESS, REFUND) is applied:
// "not found" (which may be unsigned) or an unpaid state contradicts
// WeChat Pay's own word, and closing then would release the stock of a
// paid order; it is asked again next run.
func (j *Job) closeAtWechat(ctx context.Context, log *slog.Logger, p ledger.Payment) string {
	if !j.expired(p) {
		return Open
	}
	closeErr := j.wx.CloseOrder(ctx, p.OutTradeNo)
	if closeErr != nil {
		log.Warn("compensate: close order at WeChat Pay", "err", closeErr)
	}
	if errors.Is(closeErr, wechatpay.ErrRateLimited) {
		return Limited
	}
	tx, err := j.wx.QueryOrder(ctx, p.OutTradeNo)
	paid := signedPaid(closeErr)
	switch {
	case errors.Is(err, wechatpay.ErrRateLimited):
		log.Warn("compensate: WeChat Pay rate-limits the order query; the run stops here", "err", err)
		return Limited
	case paid && (err != nil || tx.TradeState != "SUCCESS" && tx.TradeState != "REFUND"):
		log.Warn("compensate: WeChat Pay refused the close as paid (ORDERPAID) but its query says otherwise; asked again next run",
			"err", err, "trade_state", tradeState(tx))
		return Failed
	case errors.Is(err, wechatpay.ErrNotFound):
		return j.closeIfExpired(ctx, p, "ORDER_NOT_EXIST")
	case err != nil:
		log.Warn("compensate: query order after closing it", "err", err)
		return Failed
	case j.foreign(log, tx), otherOrder(log, p, tx):
		return Failed
	case tx.TradeState == "NOTPAY" || tx.TradeState == "USERPAYING",
		(tx.TradeState == "PAYERROR" || tx.TradeState == "REVOKED") && !closeAnswered(closeErr):
		log.Warn("compensate: expired order still open at WeChat Pay", "trade_state", tx.TradeState)
		return Failed
	}
	return j.apply(ctx, log, tx)
}

// closeAnswered reports whether WeChat Pay itself answered a close: done,
// the order unknown, or a refusal it signed. A timeout, or a refusal it
// did not sign (a proxy's, perhaps after WeChat Pay took the call), is no
// answer.
func closeAnswered(err error) bool {
	var be *wechatpay.BusinessError
	return err == nil || errors.Is(err, wechatpay.ErrNotFound) || (errors.As(err, &be) && be.Verified)
}

// signedPaid reports whether WeChat Pay refused a close, signed, because
// the order is paid.
func signedPaid(err error) bool {
	var be *wechatpay.BusinessError
	return errors.As(err, &be) && be.Verified && be.Code == "ORDERPAID"
}

// tradeState is an answer's trade_state, "" without one.
func tradeState(tx *wechatpay.Transaction) string {
	if tx == nil {
		return ""
	}
	return tx.TradeState
}

// foreign reports (and logs) an answer about another merchant's or
// another app's order: callbacks refuse those, so the query does too. A
// paid answer without an mchid or appid is refused as a callback without
// one is.
func (j *Job) foreign(log *slog.Logger, tx *wechatpay.Transaction) bool {
	switch {
	case j.cfg.MchID != "" && tx.MchID != j.cfg.MchID && (tx.MchID != "" || tx.Paid()):
		log.Error("compensate: query answered for another merchant", "mchid", tx.MchID)
		return true
	case j.cfg.AppID != "" && tx.AppID != j.cfg.AppID && (tx.AppID != "" || tx.Paid()):
		log.Error("compensate: query answered for another app", "appid", tx.AppID)
		return true
	}
	return false
}

// otherOrder reports (and logs) an answer about another order than the
// one asked about, or about none: the ledger update is built from the
// answer's out_trade_no, so it would be written to that other order.
func otherOrder(log *slog.Logger, p ledger.Payment, tx *wechatpay.Transaction) bool {
	if tx.OutTradeNo == p.OutTradeNo {
		return false
	}
	log.Error("compensate: query answered about another order", "answer_out_trade_no", tx.OutTradeNo)
	return true
}

func (j *Job) apply(ctx context.Context, log *slog.Logger, tx *wechatpay.Transaction) string {
	u, err := update(tx, j.store.Now())
	if err != nil {
		log.Error("compensate: bad query answer", "err", err)
		return Failed
	}
	p, err := j.store.ApplyTransaction(ctx, u)
	switch {
	case err == nil && p.State == ledger.PaymentSuccess:
		// The callback of a paid order never came: worth a warning, an
		// on-call engineer should know when WeChat Pay cannot reach us.
		log.Warn("compensate: recovered a payment whose callback never came", "trade_state", tx.TradeState,
			"transaction_id", tx.TransactionID)
		return Recovered
	case err == nil:
		log.Info("compensate: applied queried state", "trade_state", tx.TradeState, "transaction_id", tx.TransactionID)
		return Closed
	case errors.Is(err, ledger.ErrAlreadyRecorded), errors.Is(err, ledger.ErrNoChange):
		return Open
	case errors.As(err, new(*ledger.AmountMismatchError)):
		log.Warn("compensate: paid in a currency other than CNY; flagged, asked again in a day", "err", err)
		return Mismatch
	default:
		log.Warn("compensate: apply queried state", "err", err)
		return Failed
	}
}

// expired reports whether the order's expire_at has passed.
func (j *Job) expired(p ledger.Payment) bool {
	return p.ExpireAt != nil && !p.ExpireAt.After(j.store.Now())
}

func (j *Job) closeIfExpired(ctx context.Context, p ledger.Payment, why string) string {
	if !j.expired(p) {
		return Open
	}
	_, err := j.store.CloseExpired(ctx, p.OutTradeNo, ledger.SourceQuery, "query:"+why)
	switch {
	case err == nil:
		j.log.Info("compensate: closed expired order", "out_trade_no", p.OutTradeNo, "trade_state", why)
		return Closed
	case errors.Is(err, ledger.ErrNoChange):
		return Open
	default:
		j.log.Warn("compensate: close expired order", "out_trade_no", p.OutTradeNo, "err", err)
		return Failed
	}
}

// update turns a query answer into the same ledger update a callback
// makes. The notice id is derived from the transaction, so every instance
// that queries the same payment records it under one id.
func update(tx *wechatpay.Transaction, now time.Time) (ledger.TransactionUpdate, error) {
	plain, err := json.Marshal(tx)
	if err != nil {
		return ledger.TransactionUpdate{}, err
	}
	id := "query:" + tx.TransactionID
	if tx.TransactionID == "" {
		id = "query:" + tx.OutTradeNo + ":" + tx.TradeState
	}
	if tx.Paid() && (tx.TransactionID == "" || tx.AmountTotal <= 0) {
		return ledger.TransactionUpdate{}, fmt.Errorf("paid order %s without transaction id or amount", tx.OutTradeNo)
	}
	// The ledger's columns, as a callback is held to them: a strict MySQL
	// refuses a longer value, SQLite would keep it.
	if len(tx.TransactionID) > 64 || len(tx.PayerOpenID) > 128 {
		return ledger.TransactionUpdate{}, fmt.Errorf("order %s: transaction_id (over 64) or payer openid (over 128) longer than the ledger keeps",
			tx.OutTradeNo)
	}
	return ledger.TransactionUpdate{
		Notice: ledger.Notice{NotifyID: id, Source: ledger.SourceQuery, EventType: "QUERY.TRANSACTION",
			ResourceType: "query", Summary: tx.TradeStateDesc, OutTradeNo: tx.OutTradeNo,
			TransactionID: tx.TransactionID, Plaintext: string(plain), CreateTime: now},
		OutTradeNo: tx.OutTradeNo, TransactionID: tx.TransactionID, TradeState: tx.TradeState,
		AppID: tx.AppID, MchID: tx.MchID, PayerOpenID: tx.PayerOpenID, AmountTotal: tx.AmountTotal,
		PayerTotal: tx.PayerTotal, Currency: tx.Currency, SuccessTime: tx.SuccessTime,
	}, nil
}
