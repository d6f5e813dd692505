package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"paygateway/cmd/internal/stack"
)

// TestChaosShort is the short chaos run: 3,000 notifications through a
// gateway that is SIGKILLed once, with Redis stopped and MariaDB crashed,
// on private servers. Every invariant must be 0.
func TestChaosShort(t *testing.T) {
	needWorld(t, "chaos run")
	// About a minute here; a loaded machine running the other packages
	// beside it may take several. Leave the last minute of go test's
	// -timeout for the report.
	limit := 12 * time.Minute
	if d, ok := t.Deadline(); ok {
		limit = min(limit, time.Until(d)-time.Minute)
	}
	if limit < 2*time.Minute {
		t.Fatalf("go test's -timeout leaves the chaos run %v; it needs a few minutes (make test gives 15m)", limit)
	}
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	o := ShortOptions()
	o.Logf = t.Logf
	o.Dir = t.TempDir()
	rep, err := Run(ctx, o)
	checkNoRaces(t, o.Dir)
	if rep != nil {
		var b strings.Builder
		PrintReport(&b, rep)
		t.Log("\n" + b.String())
	}
	if err != nil {
		t.Fatalf("chaos run: %v", err)
	}
	for _, e := range rep.FaultErrors {
		t.Errorf("fault did not run: %v", e)
	}
	if rep.Accepted == 0 || rep.GaveUp > 0 {
		t.Errorf("accepted=%d gave up=%d, want every genuine notification accepted", rep.Accepted, rep.GaveUp)
	}
	for _, inv := range rep.Invariants {
		if inv.Count != 0 {
			t.Errorf("%s = %d, want 0 (e.g. %v)", inv.Name, inv.Count, inv.Examples)
		}
	}
}

// needWorld skips a run of the private world (what) without its programs
// or with -short, or fails it when CI=true: CI must run every test that
// needs the real servers, and a skip there would report a pass for a run
// that never happened.
func needWorld(t *testing.T, what string) {
	t.Helper()
	msg := ""
	if missing := stack.Missing("mariadbd", "mariadb-install-db", "redis-server", "go"); len(missing) > 0 {
		msg = what + " needs " + strings.Join(missing, ", ")
	} else if testing.Short() {
		msg = what + " skipped with -short"
	}
	if msg == "" {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal(msg + " (CI=true: CI must run it)")
	}
	t.Skip(msg)
}

// checkNoRaces fails t for each data race the gateway process of a run
// in dir reported in its log (it is built with -race under make test).
func checkNoRaces(t *testing.T, dir string) {
	t.Helper()
	races, err := stack.DataRaces(filepath.Join(dir, "gateway.log"))
	if err != nil {
		t.Errorf("gateway log: %v", err)
	}
	for _, r := range races {
		t.Errorf("the gateway process had a data race:\n%s", r)
	}
}
