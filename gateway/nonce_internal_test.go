package gateway

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestReplayRefusedAcrossTheSignatureWindow: the verifier takes a
// timestamp up to 5 minutes either side of now, so one signature stays
// valid for 10 minutes. A captured notification (here one whose apply
// failed, so nothing marks it done) replayed at the end of that span is
// refused as a replay by the processor's default nonce memory, not
// processed again.
func TestReplayRefusedAcrossTheSignatureWindow(t *testing.T) {
	ctx := context.Background()
	locks := NewMemoryLocker()
	gate := NewMemoryGate(100, locks)
	start := time.Now()
	now := start
	gate.nonces.now = func() time.Time { return now }
	p := NewProcessor(ProcessorConfig{}, nil, gate, locks, nil) // default NonceTTL
	t.Cleanup(func() { _ = p.Close() })

	ts := now.Add(5*time.Minute - time.Second) // the latest timestamp the verifier takes now
	n := &Notice{ID: "n-window", Nonce: "nonce-window", Timestamp: ts}
	failed := errors.New("not committed")
	if err := p.guarded(ctx, n, func() error { return failed }); !errors.Is(err, failed) {
		t.Fatalf("first delivery: %v, want its apply's error", err)
	}
	now = ts.Add(5*time.Minute - time.Second) // the signature's last valid second
	applied := false
	err := p.guarded(ctx, n, func() error { applied = true; return nil })
	var e *Error
	if !errors.As(err, &e) || e.Code != CodeReplay || applied {
		t.Fatalf("replay %v after first use: err=%v applied=%v, want %s and not applied",
			now.Sub(start), err, applied, CodeReplay)
	}
}
