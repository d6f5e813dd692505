package main

import (
	"context"
	"log/slog"
	"runtime/debug"
	"time"
)

// defaultJobRestart is how long a background job that panicked waits
// before it starts again.
const defaultJobRestart = 30 * time.Second

// keepRunning runs job until ctx ends. A panic in it (a row or an answer
// nobody foresaw) is logged with its stack and the job starts again after
// restart, instead of ending the process with every notification and
// refund it is serving, and then the next instance, which would take up
// the same row. A job that returns is done.
func keepRunning(ctx context.Context, job func(context.Context), restart time.Duration) {
	for panicked(ctx, job) {
		t := time.NewTimer(restart)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// panicked runs job and tells whether it panicked.
func panicked(ctx context.Context, job func(context.Context)) (p bool) {
	defer func() {
		if v := recover(); v != nil {
			slog.ErrorContext(ctx, "background job panicked; it starts again", "panic", v, "stack", string(debug.Stack()))
			p = true
		}
	}()
	job(ctx)
	return false
}
