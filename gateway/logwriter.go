package gateway

import (
	"fmt"
	"io"
	"sync/atomic"
	"time"
)

// LogWriter hands log lines to a goroutine of its own that writes them to
// the output, so that a stalled output (a full stderr pipe, a stuck log
// collector) cannot block the handlers that log: a payment callback must
// not wait on the log. Once the buffer holds its lines, further lines are
// dropped and counted; when the output has caught up with the buffer, the
// writer says how many it dropped, in a line of its own.
type LogWriter struct {
	out     io.Writer
	lines   chan []byte
	pending atomic.Int64  // lines taken and not yet written
	dropped atomic.Uint64 // lines dropped since the start
}

// NewLogWriter starts a writer to out that buffers up to buffer lines.
func NewLogWriter(out io.Writer, buffer int) *LogWriter {
	w := &LogWriter{out: out, lines: make(chan []byte, max(buffer, 1))}
	go w.run()
	return w
}

// Write takes a copy of p (slog hands one whole record per call) and never
// waits for the output.
func (w *LogWriter) Write(p []byte) (int, error) {
	line := append([]byte(nil), p...)
	w.pending.Add(1)
	select {
	case w.lines <- line:
	default:
		w.pending.Add(-1)
		w.dropped.Add(1)
	}
	return len(p), nil
}

// WriteWait is Write for a line that must not be dropped, such as the
// process's last (why it exits): it waits up to d for room in the buffer,
// and reports whether the line got in.
func (w *LogWriter) WriteWait(p []byte, d time.Duration) bool {
	line := append([]byte(nil), p...)
	w.pending.Add(1)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case w.lines <- line:
		return true
	case <-t.C:
		w.pending.Add(-1)
		w.dropped.Add(1)
		return false
	}
}

// Dropped is how many lines were dropped since the start.
func (w *LogWriter) Dropped() uint64 { return w.dropped.Load() }

// Flush waits up to d for the buffered lines to be written, and reports
// whether they were: the process calls it before it exits.
func (w *LogWriter) Flush(d time.Duration) bool {
	deadline := time.Now().Add(d)
	for w.pending.Load() > 0 {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(time.Millisecond)
	}
	return true
}

func (w *LogWriter) run() {
	var reported uint64
	batch := make([]byte, 0, maxLogBatch)
	for line := range w.lines {
		var n int
		batch, n = w.gather(append(batch[:0], line...))
		w.out.Write(batch) // a failing output has nowhere to report to
		if d := w.dropped.Load(); d > reported && len(w.lines) == 0 {
			fmt.Fprintf(w.out, `{"time":%q,"level":"WARN","msg":"log lines dropped: the log output was too slow","dropped":%d}`+"\n",
				time.Now().UTC().Format(time.RFC3339Nano), d-reported)
			reported = d
		}
		w.pending.Add(-int64(n))
	}
}

// maxLogBatch caps what one write to the output carries.
const maxLogBatch = 64 << 10

// gather appends the lines already waiting (up to maxLogBatch bytes) to
// batch, which holds one line, so a busy gateway writes its log in one
// system call per batch instead of one per line. It returns the batch and
// how many lines it holds.
func (w *LogWriter) gather(batch []byte) ([]byte, int) {
	n := 1
	for len(batch) < maxLogBatch {
		select {
		case line, ok := <-w.lines:
			if !ok {
				return batch, n
			}
			batch, n = append(batch, line...), n+1
		default:
			return batch, n
		}
	}
	return batch, n
}
