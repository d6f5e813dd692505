package ledger

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"slices"
	"sync"

	"gorm.io/gorm"
)

// errNotPlain stops a batch that holds an update the batch path does not
// take (a duplicate, a refused change, an anomaly): each update is then
// applied on its own, where every such case is handled.
var errNotPlain = errors.New("batch holds an update that is not a plain change")

// ApplyTransactions applies many payment updates and returns, for each,
// the error ApplyTransaction would have returned. When every update is a
// plain, legal change of a different order (the usual burst of first
// deliveries), all of them share one transaction, with one multi-row
// statement per table and one commit: each still goes through the state
// machine and gets its history row and outbox job. Otherwise, or if that
// transaction fails, each is applied on its own, at most
// soloConcurrency at a time for all the store's batches together.
// batched says whether they shared one transaction.
func (s *Store) ApplyTransactions(ctx context.Context, us []TransactionUpdate) (errs []error, batched bool) {
	errs = make([]error, len(us))
	if len(us) == 1 {
		_, errs[0] = s.ApplyTransaction(ctx, us[0])
		return errs, false
	}
	if distinct(us) && s.inTx(ctx, func(tx *gorm.DB) error { return s.applyBatch(tx, us) }) == nil {
		return errs, true
	}
	var wg sync.WaitGroup
	for i, u := range us {
		if !s.takeSolo(ctx) { // the batch's time is up: its callers get 503, WeChat Pay redelivers
			errs[i] = fmt.Errorf("apply notification %s: waiting for a connection: %w", u.Notice.NotifyID, ctx.Err())
			continue
		}
		wg.Go(func() {
			defer func() { <-s.solo }()
			errs[i] = s.applyRecovering(ctx, u)
		})
	}
	wg.Wait()
	return errs, false
}

// takeSolo takes a single-apply slot, or returns false once ctx has
// ended (then it holds none).
func (s *Store) takeSolo(ctx context.Context) bool {
	if ctx.Err() != nil {
		return false
	}
	select {
	case s.solo <- struct{}{}:
		return true
	case <-ctx.Done():
		return false
	}
}

// applyRecovering is ApplyTransaction with a panic returned as an error:
// it runs on a goroutine of its own, where a panic would end the process
// (the caller recovers the others).
func (s *Store) applyRecovering(ctx context.Context, u TransactionUpdate) (err error) {
	defer func() {
		if v := recover(); v != nil {
			slog.ErrorContext(ctx, "panic applying a notification", "notify_id", u.Notice.NotifyID, "panic", v,
				"stack", string(debug.Stack()))
			err = fmt.Errorf("apply notification %s: panic: %v", u.Notice.NotifyID, v)
		}
	}()
	_, err = s.ApplyTransaction(ctx, u)
	return err
}

// soloConcurrency bounds the connections failed batches take when their
// updates are applied one by one: a batch of 32 redeliveries (say after a
// Redis restart lost the commit marks) used to open 32 transactions at
// once, and two batch workers could take 64 connections, more than the
// whole pool, from auth, audit and the outbox. The bound is the store's,
// not a batch's: two failed batches at once would otherwise want 8
// connections of the notifications' 6 (notify.batch_workers + 4).
const soloConcurrency = 4

// distinct reports whether no two updates share an order or a notice.
func distinct(us []TransactionUpdate) bool {
	orders := make(map[string]bool, len(us))
	notices := make(map[string]bool, len(us))
	for _, u := range us {
		if orders[u.OutTradeNo] || notices[u.Notice.NotifyID] {
			return false
		}
		orders[u.OutTradeNo], notices[u.Notice.NotifyID] = true, true
	}
	return true
}

// applyBatch writes the notices first (a stored one fails the batch on
// its unique key), then locks the orders' rows in key order, lets the
// state machine decide each update and writes the results. A payment
// already refunded outside the gateway (trade_state REFUND, or a
// REFUND.SUCCESS notice that came first: see refundedOutside), or a
// registered order paid another amount (see amountFlag), is not plain:
// its confirmation is held and it is flagged, by the fallback.
func (s *Store) applyBatch(tx *gorm.DB, us []TransactionUpdate) error {
	for _, u := range us {
		if tradeRefunded(u) {
			return errNotPlain
		}
	}
	notices := make([]notificationRow, len(us))
	for i, u := range us {
		notices[i] = s.noticeRow(u.Notice)
	}
	if err := tx.Create(&notices).Error; err != nil {
		return fmt.Errorf("insert %d notifications: %w", len(notices), err)
	}
	rows, err := lockPayments(tx, us)
	if err != nil {
		return err
	}
	var w batchWrites
	var paid []string // the orders the batch moves to SUCCESS
	for _, u := range us {
		next, _, err := s.decide(rows[u.OutTradeNo], u)
		if err != nil || !next.plain() { // flags and holds are written one by one, by the fallback
			return errNotPlain
		}
		if PaymentState(next.row.State) == PaymentSuccess {
			paid = append(paid, u.OutTradeNo)
		}
		if err := w.add(s, next, u); err != nil {
			return err
		}
	}
	if err := w.flush(s, tx); err != nil {
		return err
	}
	// Only once the payments are written, as on the single path: a refund
	// notice's flag written meanwhile is then either waited for here (a
	// locking read) or its transaction finds the payment row. One query
	// for the whole batch.
	refunded, err := s.refundFirst(tx, paid)
	if err != nil {
		return err
	}
	if len(refunded) > 0 {
		return errNotPlain
	}
	return nil
}

// lockPayments reads, FOR UPDATE and in key order, the rows of the
// updates' orders.
func lockPayments(tx *gorm.DB, us []TransactionUpdate) (map[string]*paymentRow, error) {
	keys := make([]string, len(us))
	for i, u := range us {
		keys[i] = u.OutTradeNo
	}
	slices.Sort(keys)
	var found []paymentRow
	if err := lockForUpdate(tx).Where("out_trade_no IN ?", keys).Order("out_trade_no").Find(&found).Error; err != nil {
		return nil, fmt.Errorf("lock %d payments: %w", len(keys), err)
	}
	rows := make(map[string]*paymentRow, len(found))
	for i := range found {
		rows[found[i].OutTradeNo] = &found[i]
	}
	return rows, nil
}

// batchWrites collects what a batch writes.
type batchWrites struct {
	inserts []paymentRow
	updates []*paymentRow
	history []historyRow
	jobs    []outboxJobRow
}

func (w *batchWrites) add(s *Store, m move, u TransactionUpdate) error {
	if m.from == string(PaymentNone) {
		w.inserts = append(w.inserts, *m.row)
	} else {
		w.updates = append(w.updates, m.row)
	}
	w.history = append(w.history, s.historyRow(Transition{Entity: EntityPayment, EntityKey: m.row.OutTradeNo,
		OutTradeNo: m.row.OutTradeNo, From: m.from, To: m.row.State, Source: u.Notice.Source, Ref: u.Notice.NotifyID}))
	if PaymentState(m.row.State) != PaymentSuccess {
		return nil
	}
	job, err := s.confirmJob(m.row.payment())
	w.jobs = append(w.jobs, job)
	return err
}

func (w *batchWrites) flush(s *Store, tx *gorm.DB) error {
	if len(w.inserts) > 0 {
		if err := tx.Create(&w.inserts).Error; err != nil {
			return fmt.Errorf("insert %d paid payments: %w", len(w.inserts), err)
		}
	}
	for _, row := range w.updates {
		if err := s.savePayment(tx, row); err != nil {
			return err
		}
	}
	if err := tx.Create(&w.history).Error; err != nil {
		return fmt.Errorf("append %d history rows: %w", len(w.history), err)
	}
	if len(w.jobs) == 0 {
		return nil
	}
	return createJobs(tx, w.jobs)
}
