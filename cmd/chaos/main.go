// Command chaos runs the gateway through a storm: 100,000 payment
// notifications (30% duplicates, shuffled, 1% forged) and a refund storm,
// while the gateway is SIGKILLed and restarted, Redis is stopped for 30 s,
// MariaDB is restarted and the inventory simulator fails half its calls.
// It uses its own MariaDB and Redis (child processes on free ports), never
// the machine's shared ones. At the end an invariant checker compares the
// ledger with both simulators; every count must be 0 (exit status 1
// otherwise).
//
//	go run ./cmd/chaos [-short] [-n 100000] [-kills 3] [-redis-stop 30s]
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	fs := flag.NewFlagSet("chaos", flag.ExitOnError)
	short := fs.Bool("short", false, "the ~1 minute version make test runs")
	o := FullOptions()
	n := fs.Int("n", 0, "notifications (default 100000, or 3000 with -short)")
	kills := fs.Int("kills", -1, "gateway SIGKILLs")
	redisStop := fs.Duration("redis-stop", -1, "how long Redis is down")
	dir := fs.String("dir", "", "work directory to keep (default: a temp dir, removed)")
	_ = fs.Parse(os.Args[1:])
	if *short {
		o = ShortOptions()
	}
	if *n > 0 {
		o.Notifications = *n
	}
	if *kills >= 0 {
		o.Kills = *kills
	}
	if *redisStop >= 0 {
		o.RedisStop = *redisStop
	}
	o.Dir = *dir
	o.Logf = log.New(os.Stderr, "", log.LstdFlags).Printf
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := Run(ctx, o)
	if rep != nil {
		PrintReport(os.Stdout, rep)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "chaos:", err)
		os.Exit(2)
	}
	if rep.Violations() > 0 {
		os.Exit(1)
	}
}

// PrintReport writes the run's figures and the invariant verdict.
func PrintReport(w io.Writer, r *Report) {
	fmt.Fprintf(w, "chaos: %d deliveries (%d forged), %d POSTs, %d notifications accepted, %d given up, in %s"+
		" (%d commit checks deferred past the database outage)\n",
		r.Deliveries, r.Forged, r.Attempts, r.Accepted, r.GaveUp, r.Elapsed.Round(100_000_000), r.DeferredChecks)
	for _, f := range r.Faults {
		fmt.Fprintln(w, "  fault:", f)
	}
	for _, e := range r.FaultErrors {
		fmt.Fprintln(w, "  FAULT ERROR:", e)
	}
	fmt.Fprintln(w, "  refund storm:", r.Storm)
	fmt.Fprintf(w, "  ledger refunds: %s (moves: %s); WeChat Pay refund faults: %v; refused by its rules: %v\n",
		r.RefundStates, r.RefundMoves, r.WechatFaults, r.WechatRefused)
	fmt.Fprintf(w, "  outbox jobs: %d (%s); inventory simulator: %s\n", r.JobsTotal, r.JobsStates, r.InventoryStats)
	fmt.Fprintln(w, "invariants (all must be 0):")
	PrintInvariants(w, r.Invariants)
	fmt.Fprintf(w, "  %-40s %d\n", "genuine notifications given up:", r.GaveUp)
}
