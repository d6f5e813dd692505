package main

import (
	"fmt"

	"paygateway/gateway"
)

// RateLimitConfig sets per-caller limits (GCRA: Burst at once, then
// PerMinute per minute) on the API routes; WeChat's notification routes
// are never limited. A zero PerMinute disables that limit. Shared across
// instances through Redis when configured, per instance otherwise (and
// while Redis fails).
type RateLimitConfig struct {
	LedgerPerMinute  int `yaml:"ledger_per_minute"`  // /v1/ledger/*, per API key
	LedgerBurst      int `yaml:"ledger_burst"`       //
	OrdersPerMinute  int `yaml:"orders_per_minute"`  // /v1/orders, per API key
	OrdersBurst      int `yaml:"orders_burst"`       //
	RefundsPerMinute int `yaml:"refunds_per_minute"` // /v1/refunds, per JWT openid
	RefundsBurst     int `yaml:"refunds_burst"`      //
	// New refund applications of all callers together (shared by every
	// instance through Redis): keep it below WeChat Pay's per-merchant
	// rate for refund applications.
	RefundCallsPerMinute int `yaml:"refund_calls_per_minute"`
	RefundCallsBurst     int `yaml:"refund_calls_burst"`
}

// defaultRateLimit is generous for finance tools and the order service,
// strict for refunds requested by end users. Refund applications of all
// users together stay at 100/s with bursts of 50, so no second sees more
// than 150: WeChat Pay documents 150 per second per merchant.
func defaultRateLimit() RateLimitConfig {
	return RateLimitConfig{LedgerPerMinute: 600, LedgerBurst: 60, OrdersPerMinute: 3000, OrdersBurst: 300,
		RefundsPerMinute: 20, RefundsBurst: 5, RefundCallsPerMinute: 6000, RefundCallsBurst: 50}
}

// limits converts the config into the gateway's limits.
func (r RateLimitConfig) limits() gateway.RateLimits {
	return gateway.RateLimits{
		Ledger:  gateway.Limit{PerMinute: r.LedgerPerMinute, Burst: r.LedgerBurst},
		Orders:  gateway.Limit{PerMinute: r.OrdersPerMinute, Burst: r.OrdersBurst},
		Refunds: gateway.Limit{PerMinute: r.RefundsPerMinute, Burst: r.RefundsBurst},
	}
}

// refundCalls is the limit on new refund applications of all users.
func (r RateLimitConfig) refundCalls() gateway.Limit {
	return gateway.Limit{PerMinute: r.RefundCallsPerMinute, Burst: r.RefundCallsBurst}
}

// validate refuses negative values.
func (r RateLimitConfig) validate() error {
	for name, v := range map[string]int{"ledger_per_minute": r.LedgerPerMinute, "ledger_burst": r.LedgerBurst,
		"orders_per_minute": r.OrdersPerMinute, "orders_burst": r.OrdersBurst,
		"refunds_per_minute": r.RefundsPerMinute, "refunds_burst": r.RefundsBurst,
		"refund_calls_per_minute": r.RefundCallsPerMinute, "refund_calls_burst": r.RefundCallsBurst} {
		if v < 0 {
			return fmt.Errorf("config: rate_limit.%s must not be negative", name)
		}
	}
	return nil
}

// initObservability creates the per-gateway metrics registry (with DB
// pool stats and ledger gauges) and the in-process rate limiter; guards
// replaces the limiter with a Redis-backed one when Redis is configured.
func (m *Main) initObservability() error {
	if err := m.Config.RateLimit.validate(); err != nil {
		return err
	}
	m.Metrics = gateway.NewMetrics()
	m.Store = m.Store.WithRefundObserver(m.Metrics.RefundMoved)
	sqlDB, err := m.Store.DB().DB()
	if err != nil {
		return err
	}
	m.Metrics.RegisterDB(sqlDB, m.Store.Now)
	if m.notifyDB != nil {
		ndb, err := m.notifyDB.DB()
		if err != nil {
			return err
		}
		m.Metrics.RegisterPool(ndb, "ledger_notify")
	}
	m.Metrics.RegisterClock(m.clock.Offset)
	m.Metrics.RegisterCertificateExpiry(m.certExpiry)
	m.Metrics.RegisterLogDrops(logOutput.Dropped)
	m.limiter = gateway.NewMemoryLimiter()
	return nil
}
