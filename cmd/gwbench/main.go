// Command gwbench measures the gateway: signed payment notifications over
// real HTTP against the gateway binary (a child process) on MariaDB and on
// SQLite, new ones and duplicates, at increasing concurrency, next to the
// ceiling of a bare database transaction doing the same writes. It prints
// a table and writes BENCHMARKS.md.
//
//	go run ./cmd/gwbench [-backends mysql,sqlite] [-levels 8,32,128] [-n 4000] [-out BENCHMARKS.md]
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

// Options are the benchmark's settings.
type Options struct {
	Backends  []string // "mysql", "sqlite"
	Levels    []int    // closed-loop concurrency levels
	N         int      // notifications per phase
	Rate      float64  // open-loop offered rate cap (callbacks/s)
	Refunds   int      // refund creations to time
	MySQL     string   // server DSN without database, e.g. root@tcp(127.0.0.1:3306)/
	Redis     string   // Redis for the MySQL run ("" = none)
	Out       string   // BENCHMARKS.md path ("" = do not write)
	OutdirTmp string   // where binaries, keys and SQLite files go
}

func main() {
	opts, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "gwbench:", err)
		os.Exit(2)
	}
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, opts, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "gwbench:", err)
		os.Exit(1)
	}
}

func parseFlags(args []string) (Options, error) {
	fs := flag.NewFlagSet("gwbench", flag.ContinueOnError)
	backends := fs.String("backends", "mysql,sqlite", "backends to run: mysql, sqlite")
	levels := fs.String("levels", "8,32,128", "closed-loop concurrency levels")
	o := Options{}
	fs.IntVar(&o.N, "n", 4000, "new notifications per level (each answered 2xx is then redelivered 3 times)")
	fs.Float64Var(&o.Rate, "rate", 5000, "open-loop offered rate (capped at the measured ceiling)")
	fs.IntVar(&o.Refunds, "refunds", 1000, "refund creations to time (when the refunds API exists)")
	fs.StringVar(&o.MySQL, "mysql", envOr("GWBENCH_MYSQL", "root@tcp(127.0.0.1:3306)/"), "MariaDB server DSN (no database)")
	fs.StringVar(&o.Redis, "redis", envOr("GWBENCH_REDIS", "127.0.0.1:6379"), "Redis address for the MySQL run")
	fs.StringVar(&o.Out, "out", "BENCHMARKS.md", "write the results here (empty: do not write)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	o.Backends = strings.Split(*backends, ",")
	for _, s := range strings.Split(*levels, ",") {
		c, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || c <= 0 {
			return o, fmt.Errorf("-levels: bad level %q", s)
		}
		if slices.Contains(o.Levels, c) { // a level's orders are named after it
			return o, fmt.Errorf("-levels: level %d given twice", c)
		}
		o.Levels = append(o.Levels, c)
	}
	if o.N < 100 {
		return o, fmt.Errorf("-n must be at least 100")
	}
	return o, nil
}

func notWritten(path string) string {
	if path == "" {
		return ""
	}
	return " (" + path + " is not written)"
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func run(ctx context.Context, o Options, args []string) error {
	tmp, err := os.MkdirTemp("", "gwbench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	o.OutdirTmp = tmp
	env, err := newEnv(ctx, tmp)
	if err != nil {
		return err
	}
	defer env.close()
	rsaCost := measureRSA()
	fmt.Println("RSA-2048 on this machine:", rsaCost)
	var reports []BackendReport
	var invalid []string
	for _, name := range o.Backends {
		rep, err := benchBackend(ctx, env, o, strings.TrimSpace(name))
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		reports = append(reports, rep)
		printReport(os.Stdout, rep)
		for _, p := range rep.Invalid() {
			invalid = append(invalid, rep.Name+", "+p)
		}
	}
	if len(invalid) > 0 {
		return fmt.Errorf("RUN INVALID: %s%s:\n  %s", invalidWhy, notWritten(o.Out), strings.Join(invalid, "\n  "))
	}
	if o.Out == "" {
		return nil
	}
	cmd := "make bench"
	if len(args) > 0 {
		cmd = "go run ./cmd/gwbench " + strings.Join(args, " ")
	}
	return writeMarkdown(o.Out, cmd, machine(ctx, o)+"; RSA-2048 "+rsaCost, reports)
}
