package redisstore

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"paygateway/gateway"
)

// pipeline sends the script calls of concurrent requests to Redis
// together, one round trip for all the calls waiting when a worker comes
// free (gateway.RunBatches: a call that finds a worker idle goes at once).
// Under load this saves a network round trip per call on both sides.
//
// Calls nobody waits for (runLater: the gate's finish after a commit)
// ride first in the next round trip, or go on their own after at most
// delay: one round trip per notification instead of two.
type pipeline struct {
	client  *redis.Client
	in      chan *scriptCall
	max     int
	timeout time.Duration
	quit    chan struct{}
	stop    sync.Once
	wg      *sync.WaitGroup

	delay    time.Duration
	mu       sync.Mutex
	later    []*scriptCall
	timer    *time.Timer
	flushing int           // flushes under way
	flushed  chan struct{} // closed when flushing drops to 0
}

var errClosed = errors.New("redisstore closed")

type scriptCall struct {
	ctx    context.Context // the caller's (run); nil for runLater
	script *redis.Script
	keys   []string
	args   []any
	cmd    *redis.Cmd
	done   chan struct{}   // closed when cmd holds the reply (run)
	after  func(err error) // told the outcome (runLater)
	// undo (run) is called when the call was sent but its caller never
	// got a reply it could use: it gave up waiting, or the reply is an
	// error. It runs after the round trip, go-redis's own re-send
	// included, so what it queues lands after every try of the call.
	undo  func()
	state atomic.Int32 // callWaiting, callAnswered or callAbandoned
}

const (
	callWaiting int32 = iota
	callAnswered
	callAbandoned
)

func newPipeline(client *redis.Client, workers, max int, timeout, delay time.Duration) *pipeline {
	p := &pipeline{client: client, in: make(chan *scriptCall), max: max, timeout: timeout, delay: delay,
		quit: make(chan struct{})}
	p.wg = gateway.RunBatches(p.in, p.quit, gateway.BatchPolicy{Workers: workers, Max: max}, p.exec)
	return p
}

// run evaluates script and waits for its reply or for ctx to end; the
// caller's ctx bounds its wait, whatever the pipeline is doing.
func (p *pipeline) run(ctx context.Context, script *redis.Script, keys []string, args ...any) *redis.Cmd {
	return p.runUndo(ctx, script, keys, nil, args...)
}

// runUndo is run with an undo for a call whose effect must not be left
// behind when its caller cannot use the reply (see scriptCall.undo).
func (p *pipeline) runUndo(ctx context.Context, script *redis.Script, keys []string, undo func(), args ...any) *redis.Cmd {
	c := &scriptCall{ctx: ctx, script: script, keys: keys, args: args, done: make(chan struct{}), undo: undo}
	select {
	case p.in <- c:
	case <-ctx.Done():
		return failed(ctx, ctx.Err())
	case <-p.quit:
		return failed(ctx, errClosed)
	}
	select {
	case <-c.done:
		return c.cmd
	case <-ctx.Done():
		if c.state.CompareAndSwap(callWaiting, callAbandoned) {
			return failed(ctx, ctx.Err())
		}
		<-c.done // answered this instant: use the reply
		return c.cmd
	}
}

// runLater queues script without waiting: it goes first in the next
// round trip, or after p.delay at the latest; after is told the outcome.
// After close it goes at once.
func (p *pipeline) runLater(script *redis.Script, keys []string, after func(error), args ...any) {
	c := &scriptCall{script: script, keys: keys, args: args, after: after}
	p.mu.Lock()
	p.later = append(p.later, c)
	first := len(p.later) == 1
	p.mu.Unlock()
	select {
	case <-p.quit:
		p.flush()
		return
	default:
	}
	if first {
		p.arm()
	}
}

func (p *pipeline) arm() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.timer == nil {
		p.timer = time.AfterFunc(p.delay, p.flush)
		return
	}
	p.timer.Reset(p.delay)
}

// flush sends the queued calls now, if any are left; close waits for it.
func (p *pipeline) flush() {
	p.mu.Lock()
	if p.flushing == 0 {
		p.flushed = make(chan struct{})
	}
	p.flushing++
	p.mu.Unlock()
	defer p.flushEnded()
	p.exec(nil)
}

func (p *pipeline) flushEnded() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.flushing--; p.flushing == 0 {
		close(p.flushed)
	}
}

// waitFlushes waits, at most d, for the flushes under way to end.
func (p *pipeline) waitFlushes(d time.Duration) {
	p.mu.Lock()
	flushed, busy := p.flushed, p.flushing > 0
	p.mu.Unlock()
	if !busy {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-flushed:
	case <-t.C:
	}
}

func (p *pipeline) takeLater() []*scriptCall {
	p.mu.Lock()
	defer p.mu.Unlock()
	later := p.later
	p.later = nil
	return later
}

// dropAbandoned answers, without sending them, the calls whose caller
// stopped waiting before a worker took them (it fell back to memory): a
// lock taken for nobody would hold off the next delivery until its TTL.
func dropAbandoned(calls []*scriptCall) []*scriptCall {
	live := make([]*scriptCall, 0, len(calls))
	for _, c := range calls {
		if c.ctx != nil && c.ctx.Err() != nil {
			c.cmd = failed(c.ctx, c.ctx.Err())
			c.state.CompareAndSwap(callWaiting, callAnswered)
			close(c.done) // not sent: nothing to undo
			continue
		}
		live = append(live, c)
	}
	return live
}

func failed(ctx context.Context, err error) *redis.Cmd {
	cmd := redis.NewCmd(ctx)
	cmd.SetErr(err)
	return cmd
}

// close stops the workers after their current round trip, sends what is
// still queued and waits for a flush under way (the timer's), so that no
// call of the pipeline is in flight when it returns and the caller may
// close the client. A flush ends its round trip within p.timeout, and the
// wait for it is bounded by that too.
func (p *pipeline) close() {
	p.stop.Do(func() { close(p.quit) })
	p.wg.Wait()
	p.mu.Lock()
	if p.timer != nil {
		p.timer.Stop()
	}
	p.mu.Unlock()
	p.flush()
	p.waitFlushes(p.timeout)
}

// exec sends the queued calls, then calls, as EVALSHA in one pipeline; a
// call Redis answers NOSCRIPT (its script cache was flushed, e.g. by a
// restart) is sent again on its own with EVAL, which also loads the script.
func (p *pipeline) exec(calls []*scriptCall) {
	if later := p.takeLater(); len(later) > 0 {
		calls = append(later, calls...)
	}
	calls = dropAbandoned(calls)
	if len(calls) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), p.timeout)
	defer cancel()
	pipe := p.client.Pipeline()
	for _, c := range calls {
		c.cmd = c.script.EvalSha(ctx, pipe, c.keys, c.args...)
	}
	_, _ = pipe.Exec(ctx)
	for _, c := range calls {
		if redis.HasErrorPrefix(c.cmd.Err(), "NOSCRIPT") {
			c.cmd = c.script.Eval(ctx, p.client, c.keys, c.args...)
		}
		if c.after != nil {
			c.after(c.cmd.Err())
			continue
		}
		answered := c.state.CompareAndSwap(callWaiting, callAnswered)
		close(c.done) // first: a caller that lost the race to give up waits on it
		if c.undo != nil && (!answered || c.cmd.Err() != nil) {
			c.undo()
		}
	}
}
