package gateway

import (
	"strings"
	"testing"
	"time"
)

func TestRefundConfigCheck(t *testing.T) {
	tests := []struct {
		name string
		cfg  RefundConfig
		want string
	}{
		{"defaults", RefundConfig{}, ""},
		{"key taken over mid-call", RefundConfig{InFlight: 10 * time.Second, CallTimeout: 15 * time.Second}, "in_flight"},
		{"defaults with the default API budget", RefundConfig{APITimeout: 10 * time.Second}, ""},
		{"key wait and call outlast the hold", RefundConfig{InFlight: 25 * time.Second, CallTimeout: 20 * time.Second, APITimeout: 10 * time.Second}, "in_flight"},
		{"janitor races the request", RefundConfig{SafetyBuffer: 20 * time.Second, CallTimeout: 20 * time.Second, InFlight: time.Minute}, "safety_buffer"},
	}
	for _, tc := range tests {
		err := tc.cfg.Check()
		if (tc.want == "") != (err == nil) || (err != nil && !strings.HasPrefix(err.Error(), tc.want)) {
			t.Errorf("%s: Check() = %v, want %q", tc.name, err, tc.want)
		}
	}
}

// TestRefundConfigWarnings: a safety buffer Check accepts but that is
// shorter than a call plus WeChat Pay's query lag is named, and so is an
// order gap under WeChat Pay's minute; the defaults are not.
func TestRefundConfigWarnings(t *testing.T) {
	if w := (RefundConfig{}).Warnings(); len(w) != 0 {
		t.Fatalf("defaults: %q, want none", w)
	}
	short := RefundConfig{SafetyBuffer: 30 * time.Second, CallTimeout: 15 * time.Second}
	if err := short.Check(); err != nil {
		t.Fatalf("Check: %v, want it accepted", err)
	}
	if w := short.Warnings(); len(w) != 1 || !strings.HasPrefix(w[0], "safety_buffer (30s)") {
		t.Fatalf("30 s buffer: %q, want one safety_buffer warning", w)
	}
	if w := (RefundConfig{SafetyBuffer: 75 * time.Second, CallTimeout: 15 * time.Second}).Warnings(); len(w) != 0 {
		t.Fatalf("75 s buffer, 15 s calls: %q, want none", w)
	}
	if w := (RefundConfig{OrderGap: 70 * time.Second}).Warnings(); len(w) != 1 || !strings.HasPrefix(w[0], "order_gap (1m10s)") {
		t.Fatalf("70 s between an order's refunds, 15 s calls: %q, want one order_gap warning", w)
	}
	if w := (RefundConfig{OrderGap: 70 * time.Second, CallTimeout: 10 * time.Second}).Warnings(); len(w) != 0 {
		t.Fatalf("70 s between an order's refunds, 10 s calls: %q, want none", w)
	}
	if d := (RefundConfig{CallTimeout: 10 * time.Second}).withDefaults().OrderGap; d != 75*time.Second {
		t.Fatalf("default order_gap with 10 s calls: %v, want 75s", d)
	}
	if err := (RefundConfig{OrderGap: -time.Second}).Check(); err == nil || !strings.Contains(err.Error(), "order_gap") {
		t.Fatalf("negative order_gap: %v, want refused", err)
	}
}
