package main

import (
	"fmt"
	"net/url"
	"strings"
	"time"
	"unicode"

	"paygateway/retry"
)

// OutboxConfig sizes the workers that deliver outbox jobs downstream.
type OutboxConfig struct {
	Workers         int           `yaml:"workers"`          // workers per gateway instance; 0 disables delivery
	Batch           int           `yaml:"batch"`            // jobs claimed per round trip
	PollInterval    time.Duration `yaml:"poll_interval"`    // wait when nothing is due
	Lease           time.Duration `yaml:"lease"`            // a crashed worker's job is retried after this
	InitialInterval time.Duration `yaml:"initial_interval"` // first backoff delay
	MaxInterval     time.Duration `yaml:"max_interval"`     // cap on one delay
	MaxElapsed      time.Duration `yaml:"max_elapsed"`      // dead-letter this long after the first attempt
	Multiplier      float64       `yaml:"multiplier"`       // delay growth per attempt
	Jitter          float64       `yaml:"jitter"`           // randomization factor in [0, 1)
}

// InventoryConfig says where the inventory service is.
type InventoryConfig struct {
	BaseURL string        `yaml:"base_url"` // "" disables outbox delivery
	Timeout time.Duration `yaml:"timeout"`  // per call
}

// CompensationConfig tunes the lost-callback compensation job.
type CompensationConfig struct {
	Interval     time.Duration `yaml:"interval"`      // between runs
	SafetyBuffer time.Duration `yaml:"safety_buffer"` // order age before WeChat Pay is queried
	MaxInterval  time.Duration `yaml:"max_interval"`  // longest wait between two checks of an order
	Batch        int           `yaml:"batch"`         // orders read per page
}

func defaultOutboxConfig() OutboxConfig {
	return OutboxConfig{Workers: 4, Batch: 10, PollInterval: time.Second, Lease: 30 * time.Second,
		InitialInterval: time.Second, MaxInterval: 5 * time.Minute, MaxElapsed: 24 * time.Hour,
		Multiplier: 2, Jitter: 0.5}
}

func defaultInventoryConfig() InventoryConfig { return InventoryConfig{Timeout: 5 * time.Second} }

func defaultCompensationConfig() CompensationConfig {
	return CompensationConfig{Interval: time.Minute, SafetyBuffer: 5 * time.Minute, MaxInterval: 10 * time.Minute, Batch: 100}
}

// validateOutbox checks the outbox, inventory and compensation sections.
// maxRetryInterval bounds the wait between two attempts of a job: a
// longer one (a typo such as 2000000h) leaves stock unconfirmed for days.
const maxRetryInterval = 24 * time.Hour

func (c *Config) validateOutbox() error {
	o, inv, comp := c.Outbox, c.Inventory, c.Compensation
	checks := []struct {
		bad   bool
		field string
		why   string
	}{
		{o.Workers < 0, "outbox.workers (GATEWAY_OUTBOX_WORKERS)", "must not be negative"},
		{o.Workers > 0 && o.Lease <= 0, "outbox.lease (GATEWAY_OUTBOX_LEASE)", "must be positive"},
		{o.Workers > 0 && o.PollInterval <= 0, "outbox.poll_interval (GATEWAY_OUTBOX_POLL_INTERVAL)", "must be positive"},
		{o.InitialInterval <= 0 || o.MaxInterval < o.InitialInterval,
			"outbox.initial_interval/max_interval", "must be positive, max at least initial"},
		{o.MaxInterval > maxRetryInterval, "outbox.max_interval (GATEWAY_OUTBOX_MAX_INTERVAL)", "must be at most 24h"},
		{o.MaxElapsed <= 0, "outbox.max_elapsed (GATEWAY_OUTBOX_MAX_ELAPSED)", "must be positive"},
		// Written so that NaN, which fails every comparison, is refused.
		{!(o.Multiplier >= 1), "outbox.multiplier (GATEWAY_OUTBOX_MULTIPLIER)", "must be at least 1"},
		{!(o.Jitter >= 0 && o.Jitter < 1), "outbox.jitter (GATEWAY_OUTBOX_JITTER)", "must be in [0, 1)"},
		{inv.BaseURL != "" && !httpURL(inv.BaseURL), "inventory.base_url (GATEWAY_INVENTORY_BASE_URL)",
			"must be an http:// or https:// URL with a host (every job would fail until dead-lettered a day later)"},
		{inv.BaseURL != "" && inv.Timeout <= 0, "inventory.timeout (GATEWAY_INVENTORY_TIMEOUT)", "must be positive"},
		// An attempt may query and then send: the lease must outlast both
		// calls, the storing of the outcome and the claim before them, or a
		// worker would hand back every job it claims (a job starts only
		// with a whole attempt and retry.StoreReserve left).
		{inv.BaseURL != "" && o.Workers > 0 && o.Lease < 2*inv.Timeout+retry.StoreReserve+leaseMargin,
			"outbox.lease (GATEWAY_OUTBOX_LEASE)", "must be at least twice inventory.timeout plus 2s"},
		// Shutdown lets an attempt (a query and a send) finish and be stored.
		{inv.BaseURL != "" && o.Workers > 0 && c.HTTP.ShutdownTimeout < 2*inv.Timeout+retry.StoreReserve,
			"http.shutdown_timeout (GATEWAY_HTTP_SHUTDOWN_TIMEOUT)", "must be at least twice inventory.timeout plus 1s"},
		{comp.SafetyBuffer <= 0, "compensation.safety_buffer (GATEWAY_COMPENSATION_SAFETY_BUFFER)", "must be positive (never zero)"},
		{comp.Interval <= 0, "compensation.interval (GATEWAY_COMPENSATION_INTERVAL)", "must be positive"},
		{comp.MaxInterval != 0 && comp.MaxInterval < comp.Interval, "compensation.max_interval (GATEWAY_COMPENSATION_MAX_INTERVAL)",
			"must be at least compensation.interval (0: 10m)"},
	}
	for _, ch := range checks {
		if ch.bad {
			return fmt.Errorf("config: %s %s", ch.field, ch.why)
		}
	}
	return nil
}

// httpURL: an absolute http or https URL with a host, no query or
// fragment (paths are appended to it), and no white space: url.Parse
// takes a plain space in the path, which the URL would then carry.
func httpURL(raw string) bool {
	u, err := url.Parse(raw)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != "" &&
		u.RawQuery == "" && u.Fragment == "" && u.User == nil && !strings.ContainsFunc(raw, unicode.IsSpace)
}

// leaseMargin is the part of an outbox lease left for the claim itself.
const leaseMargin = time.Second
