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
