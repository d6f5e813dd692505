package main

import (
	"testing"
	"time"

	"paygateway/ledger"
)

// TestGatewayRunsOnTheDatabaseClock: with a database whose clock runs an
// hour behind this host's, the ledger writes the database's time, and the
// outbox workers, which compare a job's lease with the time, still deliver
// (on the host's clock every lease would look an hour over, and each job
// would be handed back forever).
func TestGatewayRunsOnTheDatabaseClock(t *testing.T) {
	dbTime = func(c *ledger.DBClock) func() time.Time {
		return func() time.Time { return c.Now().Add(-time.Hour) }
	}
	t.Cleanup(func() { dbTime = func(c *ledger.DBClock) func() time.Time { return c.Now } })
	_, url := startInventory(t)
	cfg := testConfig(t, backends[1])
	fastOutbox(&cfg, url)
	m := startGateway(t, cfg)
	if d := time.Since(m.Store.Now()) - time.Hour; d.Abs() > time.Second {
		t.Fatalf("the ledger's clock is %v off the database's", d)
	}
	off := metricFamily(t, m, "gateway_db_clock_offset_seconds")
	if off == nil || len(off.Metric) != 1 || off.Metric[0].GetGauge().GetValue() > 1 || off.Metric[0].GetGauge().GetValue() < -1 {
		t.Fatalf("clock offset metric %v, want one gauge within 1 s of 0 (the database runs on this host)", off)
	}
	no := uniqueNo("clk")
	payViaCallback(t, m, no, 100)
	job := onlyJob(t, m.Store, no, ledger.JobDone)
	if d := time.Since(job.CreatedAt) - time.Hour; d.Abs() > time.Minute {
		t.Fatalf("job created at %v, %v from now", job.CreatedAt, d)
	}
}
