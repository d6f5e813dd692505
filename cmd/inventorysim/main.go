// Command inventorysim serves the simulated inventory service for local runs
// and chaos tests, with optional faults. It stops on SIGINT or SIGTERM.
//
//	inventorysim --addr 127.0.0.1:8082 --error-rate 0.1 --latency 50ms
//
// Faults can be changed while it runs with POST /sim/faults.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"paygateway/gateway/inventory/inventorysim"
)

// options are the parsed command-line flags.
type options struct {
	addr   string
	faults inventorysim.Faults
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		slog.Error("inventorysim failed", "err", err)
		os.Exit(1)
	}
}

// run parses args and serves until ctx ends.
func run(ctx context.Context, args []string, stderr io.Writer) error {
	opts, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	s := inventorysim.New()
	s.SetFaults(opts.faults)
	return inventorysim.Run(ctx, opts.addr, s)
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("inventorysim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.addr, "addr", "127.0.0.1:8082", "listen address")
	fs.Float64Var(&o.faults.ErrorRate, "error-rate", 0, "share of writes answered 500 without applying")
	fs.DurationVar(&o.faults.Latency, "latency", 0, "delay before handling each write")
	fs.Float64Var(&o.faults.ApplyThenTimeoutRate, "apply-then-timeout-rate", 0,
		"share of writes applied, then answered only after --apply-then-timeout-delay")
	fs.DurationVar(&o.faults.ApplyThenTimeoutDelay, "apply-then-timeout-delay",
		inventorysim.DefaultApplyThenTimeoutDelay, "stall of an apply-then-timeout answer")
	fs.Float64Var(&o.faults.DropRate, "drop-rate", 0, "share of writes whose connection is closed without applying")
	fs.StringVar(&o.faults.Only, "only", inventorysim.OnlyWrites, "requests faults hit: writes, reads or all")
	if err := fs.Parse(args); err != nil {
		return options{}, err
	}
	if fs.NArg() > 0 {
		return options{}, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	if err := o.faults.Validate(); err != nil {
		return options{}, fmt.Errorf("fault flags: %w", err)
	}
	return o, nil
}
