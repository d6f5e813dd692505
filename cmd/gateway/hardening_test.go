package main

import (
	"strings"
	"testing"
)

func TestRateLimitConfig(t *testing.T) {
	t.Setenv("GATEWAY_RATE_LIMIT_LEDGER_PER_MINUTE", "7")
	t.Setenv("GATEWAY_RATE_LIMIT_REFUNDS_BURST", "2")
	cfg, err := Load("../../configs/gateway.yaml")
	if err != nil {
		t.Fatal(err)
	}
	l := cfg.RateLimit.limits()
	if l.Ledger.PerMinute != 7 || l.Refunds.Burst != 2 || l.Orders.PerMinute != defaultRateLimit().OrdersPerMinute {
		t.Fatalf("limits = %+v", l)
	}
	cfg.RateLimit.OrdersBurst = -1
	if err := cfg.RateLimit.validate(); err == nil || !strings.Contains(err.Error(), "rate_limit.orders_burst") {
		t.Fatalf("validate = %v, want it to name rate_limit.orders_burst", err)
	}
}
