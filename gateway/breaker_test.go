package gateway_test

import (
	"context"
	"testing"
	"time"

	"paygateway/gateway"
)

func TestBreaker(t *testing.T) {
	var none *gateway.Breaker
	if none.Fail(context.Background()) || none.Open() {
		t.Fatal("a nil breaker opened")
	}
	b := &gateway.Breaker{Cooldown: 50 * time.Millisecond}
	gone, cancel := context.WithCancel(context.Background())
	cancel()
	if b.Fail(gone) || b.Open() {
		t.Fatal("a call its caller gave up on opened the breaker")
	}
	if !b.Fail(context.Background()) || !b.Open() {
		t.Fatal("a failed call did not open the breaker")
	}
	if b.Fail(context.Background()) {
		t.Fatal("a second failure reported opening an open breaker")
	}
	time.Sleep(60 * time.Millisecond)
	if b.Open() {
		t.Fatal("the breaker stayed open past its cool-down")
	}
}
