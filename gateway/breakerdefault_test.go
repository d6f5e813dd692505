package gateway_test

import (
	"context"
	"testing"
	"time"

	"paygateway/gateway"
)

// TestZeroCooldownKeepsTheBreakerOpenForTwoSeconds: a breaker given no
// cool-down (redis.breaker_cooldown: 0) stays open for the default 2 s, not
// for no time at all: otherwise a hung Redis would cost every request its
// op timeout again.
func TestZeroCooldownKeepsTheBreakerOpenForTwoSeconds(t *testing.T) {
	b := &gateway.Breaker{}
	if !b.Fail(context.Background()) {
		t.Fatal("a failed call did not open the breaker")
	}
	time.Sleep(100 * time.Millisecond)
	if !b.Open() {
		t.Fatal("a breaker with a zero cool-down closed within 100 ms, want it open for 2 s")
	}
	if ok, _ := b.Begin(); ok {
		t.Fatal("a call went to Redis 100 ms into the default cool-down")
	}
}
