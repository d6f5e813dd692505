package redisstore

import (
	"context"
	"errors"
	"testing"
)

// TestAbandonedCallsAreNotSent: a call whose caller gave up before a
// worker took it is answered with the caller's error and left out of the
// round trip; a live call and a runLater call (no caller) stay.
func TestAbandonedCallsAreNotSent(t *testing.T) {
	gone, cancel := context.WithCancel(context.Background())
	cancel()
	abandoned := &scriptCall{ctx: gone, done: make(chan struct{})}
	live := &scriptCall{ctx: context.Background(), done: make(chan struct{})}
	later := &scriptCall{}
	got := dropAbandoned([]*scriptCall{abandoned, live, later})
	if len(got) != 2 || got[0] != live || got[1] != later {
		t.Fatalf("sent %d calls, want the live one and the later one", len(got))
	}
	<-abandoned.done
	if !errors.Is(abandoned.cmd.Err(), context.Canceled) {
		t.Fatalf("abandoned call answered %v", abandoned.cmd.Err())
	}
}
