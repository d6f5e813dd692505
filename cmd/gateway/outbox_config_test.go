package main

import (
	"math"
	"strings"
	"testing"
	"time"
)

func TestOutboxConfigValidation(t *testing.T) {
	tests := []struct {
		name   string
		change func(c *Config)
		want   string // "" = valid
	}{
		{"defaults", func(c *Config) {}, ""},
		{"zero safety buffer", func(c *Config) { c.Compensation.SafetyBuffer = 0 }, "compensation.safety_buffer"},
		{"negative safety buffer", func(c *Config) { c.Compensation.SafetyBuffer = -time.Second }, "compensation.safety_buffer"},
		{"zero lease", func(c *Config) { c.Outbox.Lease = 0 }, "outbox.lease"},
		{"max below initial", func(c *Config) { c.Outbox.MaxInterval = time.Millisecond }, "outbox.initial_interval"},
		{"max interval past a day", func(c *Config) { c.Outbox.MaxInterval = 2000000 * time.Hour }, "outbox.max_interval"},
		{"max interval of a day", func(c *Config) { c.Outbox.MaxInterval = 24 * time.Hour }, ""},
		{"jitter of one", func(c *Config) { c.Outbox.Jitter = 1 }, "outbox.jitter"},
		{"jitter NaN", func(c *Config) { c.Outbox.Jitter = math.NaN() }, "outbox.jitter"},
		{"multiplier NaN", func(c *Config) { c.Outbox.Multiplier = math.NaN() }, "outbox.multiplier"},
		{"lease shorter than two calls", func(c *Config) {
			c.Inventory = InventoryConfig{BaseURL: "http://inv", Timeout: 20 * time.Second}
		}, "outbox.lease"},
		{"lease with no time to store or claim", func(c *Config) {
			c.Inventory, c.Outbox.Lease = InventoryConfig{BaseURL: "http://inv", Timeout: 5 * time.Second}, 10*time.Second+time.Millisecond
		}, "outbox.lease"},
		{"lease with no time for the claim", func(c *Config) {
			c.Inventory, c.Outbox.Lease = InventoryConfig{BaseURL: "http://inv", Timeout: 5 * time.Second}, 11*time.Second
		}, "outbox.lease"},
		{"lease with a second each to store and to claim", func(c *Config) {
			c.Inventory, c.Outbox.Lease = InventoryConfig{BaseURL: "http://inv", Timeout: 5 * time.Second}, 12*time.Second
		}, ""},
		{"shutdown with no time to store the last attempt", func(c *Config) {
			c.Inventory, c.HTTP.ShutdownTimeout = InventoryConfig{BaseURL: "http://inv", Timeout: 5 * time.Second}, 10*time.Second+500*time.Millisecond
		}, "http.shutdown_timeout"},
		{"shutdown with a second to store it", func(c *Config) {
			c.Inventory, c.HTTP.ShutdownTimeout = InventoryConfig{BaseURL: "http://inv", Timeout: 5 * time.Second}, 11*time.Second
		}, ""},
		{"inventory without timeout", func(c *Config) { c.Inventory = InventoryConfig{BaseURL: "http://inv"} }, "inventory.timeout"},
		{"inventory without scheme", func(c *Config) { c.Inventory.BaseURL = "inventory:8082" }, "inventory.base_url"},
		{"inventory over ftp", func(c *Config) { c.Inventory.BaseURL = "ftp://inv" }, "inventory.base_url"},
		{"inventory without host", func(c *Config) { c.Inventory.BaseURL = "http:///stock" }, "inventory.base_url"},
		{"inventory with a query", func(c *Config) { c.Inventory.BaseURL = "https://inv/?a=1" }, "inventory.base_url"},
		{"inventory with a trailing space", func(c *Config) { c.Inventory.BaseURL = "https://inv.internal/stock " }, "inventory.base_url"},
		{"inventory over https with a path", func(c *Config) { c.Inventory.BaseURL = "https://inv.internal:8443/stock" }, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t, backend{name: "sqlite"})
			tc.change(&cfg)
			err := cfg.Validate()
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("Validate() = %v, want error naming %q", err, tc.want)
			}
		})
	}
}

func TestOutboxEnvironmentOverrides(t *testing.T) {
	t.Setenv("GATEWAY_OUTBOX_JITTER", "0.25")
	t.Setenv("GATEWAY_OUTBOX_WORKERS", "7")
	t.Setenv("GATEWAY_INVENTORY_BASE_URL", "http://inv:8082")
	t.Setenv("GATEWAY_COMPENSATION_SAFETY_BUFFER", "90s")
	cfg, err := Load("")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Outbox.Jitter != 0.25 || cfg.Outbox.Workers != 7 || cfg.Inventory.BaseURL != "http://inv:8082" ||
		cfg.Compensation.SafetyBuffer != 90*time.Second {
		t.Fatalf("env not applied: %+v %+v %+v", cfg.Outbox, cfg.Inventory, cfg.Compensation)
	}
}
