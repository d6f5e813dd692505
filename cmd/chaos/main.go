// Command chaos runs the gateway through a storm: 100,000 payment
// notifications (30% duplicates, shuffled, 1% forged) and a refund storm,
// while the gateway is SIGKILLed and restarted, Redis is stopped for 30 s,
// MariaDB is restarted and the inventory simulator fails half its calls.
// It uses its own MariaDB and Redis (child processes on free ports), never
// the machine's shared ones. At the end an invariant checker compares the
// ledger with both simulators; every count must be 0 (exit status 1
// otherwise).
//
// With -soak it runs a soak instead (RunSoak): no faults, a steady load
// (-rate deliveries a second, with refunds and finance reads) for the
// given time, sampling the gateway for anything that grows without bound.
//
//	go run ./cmd/chaos [-short] [-n 100000] [-kills 3] [-redis-stop 30s]
//	go run ./cmd/chaos -soak 10m [-rate 200]
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
	"time"
)

func main() {
	fs := flag.NewFlagSet("chaos", flag.ExitOnError)
	short := fs.Bool("short", false, "the ~1 minute version make test runs")
	o := FullOptions()
	n := fs.Int("n", 0, "notifications (default 100000, or 3000 with -short)")
	kills := fs.Int("kills", -1, "gateway SIGKILLs")
	redisStop := fs.Duration("redis-stop", -1, "how long Redis is down")
	dir := fs.String("dir", "", "work directory to keep (default: a temp dir, removed)")
	soak := fs.Duration("soak", 0, "run a soak this long instead: steady load, no faults")
	rate := fs.Float64("rate", 200, "soak: deliveries a second")
	_ = fs.Parse(os.Args[1:])
	logf := log.New(os.Stderr, "", log.LstdFlags).Printf
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *soak > 0 {
		o := SoakOptions(*soak, *rate)
		o.Dir, o.Logf = *dir, logf
		os.Exit(soakMain(ctx, o))
	}
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
	o.Logf = logf
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

// soakMain runs a soak and returns the exit status: 0 passed, 1 a check
// or an invariant failed, 2 the run itself broke.
func soakMain(ctx context.Context, o Options) int {
	rep, err := RunSoak(ctx, o)
	if rep != nil {
		PrintSoakReport(os.Stdout, rep)
	}
	switch {
	case err != nil:
		fmt.Fprintln(os.Stderr, "soak:", err)
		return 2
	case rep.Failures() > 0:
		return 1
	}
	return 0
}

// PrintSoakReport writes the load's figures, the samples, the leak
// checks and the invariants.
func PrintSoakReport(w io.Writer, r *SoakReport) {
	fmt.Fprintf(w, "soak: %.0f deliveries/s offered for %s: %d arrivals (%d dropped, too many in flight), %d forged, "+
		"%d POSTs, %d notifications accepted, %d given up\n", r.Rate, r.Duration, r.Deliveries, r.Dropped, r.Forged,
		r.Attempts, r.Accepted, r.GaveUp)
	fmt.Fprintf(w, "  notifications answered other than 2xx (sent again): %v\n", r.Refusals)
	fmt.Fprintf(w, "  refunds: %d orders; %s\n", r.RefundedOrders, r.Storm)
	fmt.Fprintf(w, "  ledger refunds: %s; outbox jobs: %d (%s); inventory: %s\n", r.RefundStates, r.JobsTotal,
		r.JobsStates, r.InventoryStats)
	fmt.Fprintln(w, "  finance reads:", r.Finance)
	fmt.Fprintf(w, "samples (baseline: the first after the %s warm-up):\n", r.Warmup)
	PrintSamples(w, r.Samples)
	for _, e := range r.SampleErrors {
		fmt.Fprintln(w, "  SAMPLE ERROR:", e)
	}
	fmt.Fprintln(w, "leak checks:")
	for _, c := range r.Checks {
		verdict := "ok"
		if !c.OK {
			verdict = "FAILED"
		}
		fmt.Fprintf(w, "  %-40s %-6s %s\n", c.Name+":", verdict, c.Detail)
	}
	fmt.Fprintln(w, "invariants (all must be 0):")
	PrintInvariants(w, r.Invariants)
	fmt.Fprintf(w, "  %-40s %d\n", "genuine notifications given up:", r.GaveUp)
	fmt.Fprintf(w, "soak: %d failures\n", r.Failures())
}

// PrintSamples writes the samples as a table.
func PrintSamples(w io.Writer, samples []Sample) {
	fmt.Fprintf(w, "  %6s %6s %5s %8s %8s %8s %9s %5s %6s %7s %8s %6s %5s\n", "at", "gorout", "fds", "rss MiB", "heap MiB",
		"goal MiB", "db open/use", "redis", "outbox", "notif/s", "p99 ms", "gw cpu", "busy")
	for _, s := range samples {
		at := s.At.Round(time.Second).String()
		if s.Quiet {
			at = "quiet"
		}
		fmt.Fprintf(w, "  %6s %6d %5d %8.1f %8.1f %8.1f %6d/%-4d %5d %6d %7.0f %8.1f %6.2f %4.0f%%\n", at, s.Goroutines,
			s.FDs, float64(s.RSS)/(1<<20), float64(s.HeapInuse)/(1<<20), float64(s.HeapGoal)/(1<<20), s.DBOpen, s.DBInUse,
			s.RedisConns, s.Outbox, s.Rate, float64(s.P99)/float64(time.Millisecond), s.GatewayCPU, 100*s.Busy)
	}
}
