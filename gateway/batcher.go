package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"time"

	"paygateway/ledger"
)

// errBatcherClosed answers updates that arrive after shutdown began.
var errBatcherClosed = errors.New("notification batcher stopped")

// batcher is group commit for payment notifications: updates that arrive
// while a worker is busy share its next ledger transaction (see
// ledger.Store.ApplyTransactions), and a second transaction starts only
// when the policy's Spill updates wait (or one has waited SpillAfter);
// an update that finds every worker idle goes at once, alone. No update
// waits for others to arrive.
type batcher struct {
	store   *ledger.Store
	in      chan *batchItem
	timeout time.Duration
	observe func(size int, batched bool)
	quit    chan struct{}
	stop    sync.Once
	wg      *sync.WaitGroup
}

type batchItem struct {
	ctx  context.Context // the caller's: an update nobody waits for is not applied
	u    ledger.TransactionUpdate
	done chan error
}

func newBatcher(store *ledger.Store, policy BatchPolicy, timeout time.Duration, observe func(int, bool)) *batcher {
	b := &batcher{store: store, in: make(chan *batchItem), timeout: timeout, observe: observe,
		quit: make(chan struct{})}
	b.wg = RunBatches(b.in, b.quit, policy, b.run)
	return b
}

// apply hands u to a worker and waits for its result. A caller whose ctx
// ends stops waiting; the update may still commit, and a redelivery then
// finds it stored.
func (b *batcher) apply(ctx context.Context, u ledger.TransactionUpdate) error {
	it := &batchItem{ctx: ctx, u: u, done: make(chan error, 1)}
	select {
	case b.in <- it:
	case <-ctx.Done():
		return ctx.Err()
	case <-b.quit:
		return errBatcherClosed
	}
	select {
	case err := <-it.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// close stops taking updates; those already taken are still applied.
func (b *batcher) close() {
	b.stop.Do(func() { close(b.quit) })
	b.wg.Wait()
}

// run applies the updates whose callers still wait, within the latest of
// their deadlines (and never longer than the batch timeout). An update
// whose caller already gave up (answered 503) is dropped: applying it
// would only commit a notification nobody marks done, whose redelivery
// then costs a lookup, and would hold a connection while the database is
// slow.
func (b *batcher) run(all []*batchItem) {
	items := make([]*batchItem, 0, len(all))
	deadline := time.Time{}
	for _, it := range all {
		if err := it.ctx.Err(); err != nil {
			it.done <- err
			continue
		}
		items = append(items, it)
		if d, ok := it.ctx.Deadline(); ok && d.After(deadline) {
			deadline = d
		}
	}
	if len(items) == 0 {
		return
	}
	if limit := time.Now().Add(b.timeout); deadline.IsZero() || deadline.After(limit) {
		deadline = limit
	}
	ctx, cancel := context.WithDeadline(WithRequestID(context.Background(), requestIDs(items)), deadline)
	defer cancel()
	us := make([]ledger.TransactionUpdate, len(items))
	for i, it := range items {
		us[i] = it.u
	}
	errs, batched := b.applyAll(ctx, us)
	if b.observe != nil {
		b.observe(len(items), batched)
	}
	for i, it := range items {
		it.done <- errs[i]
	}
}

// applyAll is ApplyTransactions with a panic turned into an error for
// every update of the batch: its callers are answered 503 and WeChat Pay
// redelivers, while the process, its other requests and its jobs go on.
// Uncaught, the panic would end the process, and the redelivery of the
// same notification would end the next one.
func (b *batcher) applyAll(ctx context.Context, us []ledger.TransactionUpdate) (errs []error, batched bool) {
	defer func() {
		v := recover()
		if v == nil {
			return
		}
		ids := make([]string, len(us))
		for i, u := range us {
			ids[i] = u.Notice.NotifyID
		}
		slog.ErrorContext(ctx, "panic applying notifications", "panic", v, "notify_ids", ids, "stack", string(debug.Stack()))
		errs, batched = make([]error, len(us)), false
		for i := range errs {
			errs[i] = fmt.Errorf("apply notification %s: panic: %v", ids[i], v)
		}
	}()
	return b.store.ApplyTransactions(ctx, us)
}

// requestIDs names the requests of a batch for what its transaction
// logs (an anomaly flagged, a panic): the one request's id, or theirs
// joined by commas, so a search for any of them finds the line.
func requestIDs(items []*batchItem) string {
	ids := make([]string, 0, len(items))
	for _, it := range items {
		if id := RequestID(it.ctx); id != "" && !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
	}
	return strings.Join(ids, ",")
}
