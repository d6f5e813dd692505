package redisstore

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"paygateway/gateway"
)

// pipeline sends the script calls of concurrent requests to Redis
// together, one round trip for all the calls waiting when a worker comes
// free (gateway.RunBatches: a call that finds a worker idle goes at once).
// Under load this saves a network round trip per call on both sides.
type pipeline struct {
	client  *redis.Client
	in      chan *scriptCall
	max     int
	timeout time.Duration
	quit    chan struct{}
	stop    sync.Once
}

var errClosed = errors.New("redisstore closed")

type scriptCall struct {
	script *redis.Script
	keys   []string
	args   []any
	cmd    *redis.Cmd
	done   chan struct{}
}

func newPipeline(client *redis.Client, workers, max int, timeout time.Duration) *pipeline {
	p := &pipeline{client: client, in: make(chan *scriptCall), max: max, timeout: timeout, quit: make(chan struct{})}
	gateway.RunBatches(p.in, p.quit, workers, max, p.exec)
	return p
}

// run evaluates script and waits for its reply or for ctx to end; the
// caller's ctx bounds its wait, whatever the pipeline is doing.
func (p *pipeline) run(ctx context.Context, script *redis.Script, keys []string, args ...any) *redis.Cmd {
	c := &scriptCall{script: script, keys: keys, args: args, done: make(chan struct{})}
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
		return failed(ctx, ctx.Err())
	}
}

func failed(ctx context.Context, err error) *redis.Cmd {
	cmd := redis.NewCmd(ctx)
	cmd.SetErr(err)
	return cmd
}

// close stops the workers after their current round trip.
func (p *pipeline) close() { p.stop.Do(func() { close(p.quit) }) }

// exec sends the calls as EVALSHA in one pipeline; a call Redis answers
// NOSCRIPT (its script cache was flushed, e.g. by a restart) is sent
// again on its own with EVAL, which also loads the script.
func (p *pipeline) exec(calls []*scriptCall) {
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
		close(c.done)
	}
}
