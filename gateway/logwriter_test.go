package gateway

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// stalledOutput blocks every write until it is released.
type stalledOutput struct {
	entered chan struct{} // gets a value as each write starts
	release chan struct{}
	mu      sync.Mutex
	buf     bytes.Buffer
	writes  int
}

func (s *stalledOutput) Write(p []byte) (int, error) {
	select {
	case s.entered <- struct{}{}:
	default:
	}
	<-s.release
	s.mu.Lock()
	defer s.mu.Unlock()
	s.writes++
	return s.buf.Write(p)
}

func (s *stalledOutput) lines() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Split(strings.TrimSuffix(s.buf.String(), "\n"), "\n")
}

// TestStalledLogOutputDoesNotBlockLogging logs through slog into an output
// that does not move: every call returns while the output is stalled, the
// lines past the buffer are dropped and counted, and once the output
// moves the buffered lines arrive in order, then a line with the count.
func TestStalledLogOutputDoesNotBlockLogging(t *testing.T) {
	out := &stalledOutput{entered: make(chan struct{}, 1), release: make(chan struct{})}
	w := NewLogWriter(out, 4)
	log := slog.New(slog.NewJSONHandler(w, nil))
	log.Info("line", "n", 0)
	<-out.entered // the writer holds line 0, stuck in the output
	done := make(chan struct{})
	go func() {
		for i := 1; i < 10; i++ {
			log.Info("line", "n", i)
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("logging blocked on a stalled output")
	}
	// One line is in the writer's hands, four wait in the buffer.
	if got := w.Dropped(); got != 5 {
		t.Fatalf("dropped %d lines, want 5", got)
	}
	if w.Flush(50 * time.Millisecond) {
		t.Fatal("Flush reported the lines written while the output is stalled")
	}
	close(out.release)
	if !w.Flush(5 * time.Second) {
		t.Fatal("Flush timed out after the output moved")
	}
	got := out.lines()
	if len(got) != 6 {
		t.Fatalf("output has %d lines, want 5 logged and 1 report:\n%s", len(got), strings.Join(got, "\n"))
	}
	for i, l := range got[:5] {
		if !strings.Contains(l, fmt.Sprintf(`"n":%d`, i)) {
			t.Errorf("line %d = %s, want n=%d", i, l, i)
		}
	}
	var report struct {
		Level   string `json:"level"`
		Dropped int    `json:"dropped"`
	}
	if err := json.Unmarshal([]byte(got[5]), &report); err != nil || report.Level != "WARN" || report.Dropped != 5 {
		t.Errorf("report line %s (%v): want a WARN with dropped=5", got[5], err)
	}
}

// TestWaitingLogLinesShareAWrite holds the output while 20 lines queue up:
// once it moves, they reach it in one write, whole and in order, instead
// of one system call each.
func TestWaitingLogLinesShareAWrite(t *testing.T) {
	out := &stalledOutput{entered: make(chan struct{}, 1), release: make(chan struct{})}
	w := NewLogWriter(out, 64)
	log := slog.New(slog.NewJSONHandler(w, nil))
	log.Info("line", "n", 0)
	<-out.entered // the writer holds line 0, stuck in the output
	for i := 1; i <= 20; i++ {
		log.Info("line", "n", i)
	}
	close(out.release)
	if !w.Flush(5 * time.Second) {
		t.Fatal("Flush timed out after the output moved")
	}
	got := out.lines()
	if len(got) != 21 {
		t.Fatalf("output has %d lines, want 21:\n%s", len(got), strings.Join(got, "\n"))
	}
	for i, l := range got {
		var rec struct{ N int }
		if err := json.Unmarshal([]byte(l), &rec); err != nil || rec.N != i {
			t.Errorf("line %d = %s (%v), want n=%d", i, l, err, i)
		}
	}
	out.mu.Lock()
	defer out.mu.Unlock()
	if out.writes != 2 {
		t.Errorf("%d writes for 21 lines, want 2: line 0, then the 20 that waited", out.writes)
	}
	if w.Dropped() != 0 {
		t.Errorf("dropped %d lines", w.Dropped())
	}
}

// TestLastLineWaitsForRoom: with the buffer full behind a stalled output,
// WriteWait (the exit line) waits for room instead of being dropped, and
// the line is written once the output moves.
func TestLastLineWaitsForRoom(t *testing.T) {
	out := &stalledOutput{entered: make(chan struct{}, 1), release: make(chan struct{})}
	w := NewLogWriter(out, 2)
	w.Write([]byte("held\n"))
	<-out.entered // the writer holds it
	w.Write([]byte("a\n"))
	w.Write([]byte("b\n")) // the buffer is full
	got := make(chan bool)
	go func() { got <- w.WriteWait([]byte("gateway: the reason\n"), 5*time.Second) }()
	time.Sleep(50 * time.Millisecond)
	close(out.release)
	if !<-got {
		t.Fatal("the last line was dropped")
	}
	if !w.Flush(5 * time.Second) {
		t.Fatal("Flush timed out")
	}
	if lines := out.lines(); len(lines) != 4 || lines[3] != "gateway: the reason" {
		t.Fatalf("output %q: want the last line after the others", lines)
	}
	if w.Dropped() != 0 {
		t.Errorf("dropped %d lines", w.Dropped())
	}
}
