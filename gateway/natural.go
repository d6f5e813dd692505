package gateway

import (
	"sync"
	"time"
)

// BatchPolicy says how RunBatches shares work between its workers.
type BatchPolicy struct {
	Workers int // at most this many batches run at once (at least 1)
	Max     int // items per batch (at least 1)
	// Spill is how many items must wait before a further worker starts
	// while another is busy; below it they wait for the busy worker and
	// share its next batch. 0 or 1: any idle worker takes waiting items.
	Spill int
	// SpillAfter bounds that wait: an item that has waited this long goes
	// to an idle worker even below Spill, so a stuck batch cannot hold up
	// the items behind it. Default 10 ms.
	SpillAfter time.Duration
}

// defaultSpillAfter is BatchPolicy.SpillAfter when unset.
const defaultSpillAfter = 10 * time.Millisecond

// RunBatches hands the items arriving on in to do, in batches, until quit
// is closed. This is natural batching: an item that finds every worker
// idle goes at once, alone, and nothing waits for company; items that
// arrive while a worker is busy share a later batch. While one worker is
// busy, another starts only when Spill items are waiting, so that light
// load makes fewer, fuller batches and heavy load uses every worker.
// After quit, the items already taken from in are still handed to do.
// Wait on the returned group after closing quit.
func RunBatches[T any](in <-chan T, quit <-chan struct{}, p BatchPolicy, do func([]T)) *sync.WaitGroup {
	p.Workers, p.Max = max(p.Workers, 1), max(p.Max, 1)
	if p.Workers == 1 || p.Spill <= 1 {
		return runDirect(in, quit, p, do)
	}
	jobs := make(chan []T)
	done := make(chan struct{}, p.Workers)
	var wg sync.WaitGroup
	for range p.Workers {
		wg.Go(func() {
			for batch := range jobs {
				do(batch)
				done <- struct{}{}
			}
		})
	}
	if p.SpillAfter <= 0 {
		p.SpillAfter = defaultSpillAfter
	}
	d := &dispatcher[T]{policy: p, idle: p.Workers, jobs: jobs, done: done}
	wg.Go(func() { d.run(in, quit) })
	return &wg
}

// runDirect is RunBatches without a Spill to keep: each worker takes
// from in itself, which saves a hand-off per batch.
func runDirect[T any](in <-chan T, quit <-chan struct{}, p BatchPolicy, do func([]T)) *sync.WaitGroup {
	var wg sync.WaitGroup
	for range p.Workers {
		wg.Go(func() {
			for {
				select {
				case <-quit:
					return
				case first := <-in:
					do(gather(in, first, p.Max))
				}
			}
		})
	}
	return &wg
}

func gather[T any](in <-chan T, first T, max int) []T {
	items := []T{first}
	for len(items) < max {
		select {
		case it := <-in:
			items = append(items, it)
		default:
			return items
		}
	}
	return items
}

// dispatcher owns the waiting items (with when each arrived) and the
// count of idle workers.
type dispatcher[T any] struct {
	policy  BatchPolicy
	idle    int
	pending []T
	arrived []time.Time
	jobs    chan<- []T
	done    <-chan struct{}
}

func (d *dispatcher[T]) run(in <-chan T, quit <-chan struct{}) {
	defer close(d.jobs)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		src := in
		if len(d.pending) >= d.policy.Max*d.policy.Workers {
			src = nil // every worker's next batch is full: push back
		}
		out, next, wake := d.ready(time.Now())
		var tick <-chan time.Time
		if wake > 0 {
			timer.Reset(wake)
			tick = timer.C
		}
		select {
		case <-quit:
			d.drain()
			return
		case it := <-src:
			d.pending = append(d.pending, it)
			d.arrived = append(d.arrived, time.Now())
		case out <- next:
			d.take(len(next))
			d.idle--
		case <-d.done:
			d.idle++
		case <-tick:
		}
	}
}

// ready returns the jobs channel and the next batch when a worker should
// take one now; otherwise a nil channel and, when waiting items could go
// to an idle worker once they have waited SpillAfter, how long until then.
func (d *dispatcher[T]) ready(now time.Time) (chan<- []T, []T, time.Duration) {
	n := len(d.pending)
	if n == 0 || d.idle == 0 {
		return nil, nil, 0
	}
	if d.idle < d.policy.Workers && n < d.policy.Spill {
		if wait := d.arrived[0].Add(d.policy.SpillAfter).Sub(now); wait > 0 {
			return nil, nil, wait
		}
	}
	return d.jobs, d.batch(), 0
}

// batch is the next batch: the oldest waiting items, at most Max.
func (d *dispatcher[T]) batch() []T {
	n := min(len(d.pending), d.policy.Max)
	return d.pending[:n:n]
}

// take forgets the first n waiting items (handed to a worker).
func (d *dispatcher[T]) take(n int) {
	d.pending, d.arrived = d.pending[n:], d.arrived[n:]
}

// drain hands what is still waiting to the workers, ignoring Spill. Like
// run it gives a batch only to an idle worker, so that every worker's
// last done fits in the channel after jobs is closed.
func (d *dispatcher[T]) drain() {
	for len(d.pending) > 0 {
		out := d.jobs
		if d.idle == 0 {
			out = nil
		}
		select {
		case out <- d.batch():
			d.take(min(len(d.pending), d.policy.Max))
			d.idle--
		case <-d.done:
			d.idle++
		}
	}
}
