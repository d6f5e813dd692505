package main

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestSoakShort runs a 10-second soak at 50 deliveries a second (the
// gateway is race-enabled here, beside the rest of the suite): too short
// to show a leak, so its leak checks are only logged, but long enough to
// prove that `make soak` still works: every sample is read from the real
// /metrics (a renamed series fails it), the load, refunds and finance
// reads all run and are answered, and the ledger invariants hold without
// asking for the faults a soak does not inject.
func TestSoakShort(t *testing.T) {
	needWorld(t, "soak run")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	o := SoakOptions(10*time.Second, 50)
	o.DeliveryTimeout = ShortOptions().DeliveryTimeout // a loaded machine (make test) may need more than a minute
	o.Logf = t.Logf
	o.Dir = t.TempDir()
	rep, err := RunSoak(ctx, o)
	checkNoRaces(t, o.Dir)
	if rep != nil {
		var b strings.Builder
		PrintSoakReport(&b, rep)
		t.Log("\n" + b.String())
	}
	if err != nil {
		t.Fatalf("soak run: %v", err)
	}
	// Beside the race-enabled suite the gateway may answer a scrape or a
	// finance read 503 (timed out): logged above, not failed here. The
	// quiet sample, taken once the load is over, must read every series.
	if n := len(rep.Samples); n < 2 || !rep.Samples[n-1].Quiet {
		t.Errorf("%d samples (errors: %q), want some during the load and a quiet one", n, rep.SampleErrors)
	}
	if rep.Accepted == 0 || rep.GaveUp > 0 || rep.Dropped > 0 {
		t.Errorf("accepted=%d gave up=%d dropped=%d, want every arrival sent and accepted", rep.Accepted, rep.GaveUp, rep.Dropped)
	}
	if rep.RefundedOrders == 0 || !strings.Contains(rep.Finance.String(), " 200 ×") {
		t.Errorf("refunded orders %d, finance reads %s: want refunds and reads answered", rep.RefundedOrders, rep.Finance)
	}
	for _, inv := range rep.Invariants {
		if inv.Count != 0 {
			t.Errorf("%s = %d, want 0 (e.g. %v)", inv.Name, inv.Count, inv.Examples)
		}
	}
}
