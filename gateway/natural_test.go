package gateway

import (
	"slices"
	"sync"
	"testing"
	"time"
)

// batchRecorder runs RunBatches with a do that records every batch and
// holds each one until release is closed or sent to.
type batchRecorder struct {
	in      chan int
	quit    chan struct{}
	wg      *sync.WaitGroup
	mu      sync.Mutex
	batches [][]int
	started chan []int
	release chan struct{}
}

func newBatchRecorder(p BatchPolicy) *batchRecorder {
	r := &batchRecorder{in: make(chan int), quit: make(chan struct{}), started: make(chan []int, 100),
		release: make(chan struct{})}
	r.wg = RunBatches(r.in, r.quit, p, func(b []int) {
		r.mu.Lock()
		r.batches = append(r.batches, slices.Clone(b))
		r.mu.Unlock()
		r.started <- b
		<-r.release
	})
	return r
}

func (r *batchRecorder) send(t *testing.T, items ...int) {
	t.Helper()
	for _, it := range items {
		select {
		case r.in <- it:
		case <-time.After(5 * time.Second):
			t.Fatalf("item %d not taken", it)
		}
	}
}

func (r *batchRecorder) nextBatch(t *testing.T) []int {
	t.Helper()
	select {
	case b := <-r.started:
		return b
	case <-time.After(5 * time.Second):
		t.Fatal("no batch started")
		return nil
	}
}

// noBatch asserts that no batch starts for a while.
func (r *batchRecorder) noBatch(t *testing.T) {
	t.Helper()
	select {
	case b := <-r.started:
		t.Fatalf("batch %v started, want none", b)
	case <-time.After(100 * time.Millisecond):
	}
}

// TestRunBatchesSpill: a lone item goes at once; while a worker is busy,
// fewer than Spill waiting items wait for it and share its next batch; at
// Spill the second worker takes them.
func TestRunBatchesSpill(t *testing.T) {
	r := newBatchRecorder(BatchPolicy{Workers: 2, Max: 10, Spill: 3, SpillAfter: time.Hour})
	defer func() { close(r.release); close(r.quit); r.wg.Wait() }()
	r.send(t, 1)
	if b := r.nextBatch(t); !slices.Equal(b, []int{1}) {
		t.Fatalf("first batch = %v, want [1] at once", b)
	}
	r.send(t, 2, 3)
	r.noBatch(t) // 2 waiting < Spill 3: the idle worker does not start
	r.send(t, 4)
	if b := r.nextBatch(t); !slices.Equal(b, []int{2, 3, 4}) {
		t.Fatalf("spilled batch = %v, want [2 3 4]", b)
	}
	r.send(t, 5) // both busy: waits
	r.noBatch(t)
	r.release <- struct{}{}
	r.noBatch(t) // one free, one busy, 1 waiting < Spill: still waits
	r.release <- struct{}{}
	if b := r.nextBatch(t); !slices.Equal(b, []int{5}) {
		t.Fatalf("batch once both workers came free = %v, want [5]", b)
	}
}

// TestRunBatchesSpillAfter: below Spill, an item that has waited
// SpillAfter goes to the idle worker, so a stuck batch cannot hold it up.
func TestRunBatchesSpillAfter(t *testing.T) {
	const after = 50 * time.Millisecond
	r := newBatchRecorder(BatchPolicy{Workers: 2, Max: 10, Spill: 3, SpillAfter: after})
	defer func() { close(r.release); close(r.quit); r.wg.Wait() }()
	r.send(t, 1)
	r.nextBatch(t) // held: the stuck batch
	start := time.Now()
	r.send(t, 2)
	if b := r.nextBatch(t); !slices.Equal(b, []int{2}) {
		t.Fatalf("batch = %v, want [2]", b)
	}
	if waited := time.Since(start); waited < after {
		t.Fatalf("item went after %v, want it held for SpillAfter (%v) first", waited, after)
	}
}

// TestRunBatchesWithoutSpill: with Spill 0 an idle worker takes a lone
// item at once even while another is busy, and a batch holds at most Max.
func TestRunBatchesWithoutSpill(t *testing.T) {
	r := newBatchRecorder(BatchPolicy{Workers: 2, Max: 2})
	defer func() { close(r.release); close(r.quit); r.wg.Wait() }()
	r.send(t, 1)
	r.nextBatch(t)
	r.send(t, 2)
	if b := r.nextBatch(t); !slices.Equal(b, []int{2}) {
		t.Fatalf("second worker's batch = %v, want [2]", b)
	}
	for _, it := range []int{3, 4, 5} { // both busy: the senders wait
		go func() {
			select {
			case r.in <- it:
			case <-r.quit:
			}
		}()
	}
	time.Sleep(500 * time.Millisecond) // the three senders are blocked on in, even on a loaded machine
	r.release <- struct{}{}
	if b := r.nextBatch(t); len(b) != 2 || b[0] < 3 || b[1] < 3 {
		t.Fatalf("batch = %v, want two of [3 4 5] (Max 2)", b)
	}
}

// TestRunBatchesDrainsOnQuit: items already taken when quit closes are
// still handed to do, in batches of at most Max, and every worker exits.
func TestRunBatchesDrainsOnQuit(t *testing.T) {
	r := newBatchRecorder(BatchPolicy{Workers: 2, Max: 2, Spill: 5})
	r.send(t, 1)
	r.nextBatch(t)
	r.send(t, 2, 3, 4) // below Spill: they wait for the busy worker
	close(r.quit)
	close(r.release)
	exited := make(chan struct{})
	go func() { r.wg.Wait(); close(exited) }()
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
		t.Fatal("workers did not exit after quit")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	var got []int
	for _, b := range r.batches {
		if len(b) > 2 {
			t.Fatalf("batch %v holds more than Max", b)
		}
		got = append(got, b...)
	}
	slices.Sort(got) // two workers: batches may start in either order
	if !slices.Equal(got, []int{1, 2, 3, 4}) {
		t.Fatalf("handled %v, want [1 2 3 4]", got)
	}
}
