package main

import (
	"context"
	"errors"
	"flag"
	"io"
	"net"
	"testing"
	"time"

	"paygateway/gateway/inventory/inventorysim"
)

func TestParseFlags(t *testing.T) {
	cases := []struct {
		name    string
		args    []string
		want    options
		wantErr bool
	}{
		{name: "defaults", want: options{addr: "127.0.0.1:8082", faults: inventorysim.Faults{
			ApplyThenTimeoutDelay: inventorysim.DefaultApplyThenTimeoutDelay, Only: inventorysim.OnlyWrites}}},
		{name: "all faults", args: []string{"--addr", "127.0.0.1:9000", "--error-rate", "0.1", "--latency", "50ms",
			"--apply-then-timeout-rate", "0.2", "--apply-then-timeout-delay", "2s", "--drop-rate", "0.05", "--only", "all"},
			want: options{addr: "127.0.0.1:9000", faults: inventorysim.Faults{ErrorRate: 0.1, Latency: 50 * time.Millisecond,
				ApplyThenTimeoutRate: 0.2, ApplyThenTimeoutDelay: 2 * time.Second, DropRate: 0.05, Only: "all"}}},
		{name: "rate above 1", args: []string{"--error-rate", "1.5"}, wantErr: true},
		{name: "rates add above 1", args: []string{"--error-rate", "0.6", "--drop-rate", "0.6"}, wantErr: true},
		{name: "negative latency", args: []string{"--latency", "-1s"}, wantErr: true},
		{name: "unknown flag", args: []string{"--chaos"}, wantErr: true},
		{name: "stray argument", args: []string{"now"}, wantErr: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseFlags(tc.args, io.Discard)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err=%v, wantErr %v", err, tc.wantErr)
			}
			if got != tc.want {
				t.Fatalf("options=%+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestRunStopsWhenContextEnds(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"--addr", "127.0.0.1:0"}, io.Discard) }()
	time.Sleep(100 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("run still serving 5s after cancel")
	}
}

func TestRunReportsBusyAddress(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	defer ln.Close()
	err = run(context.Background(), []string{"--addr", ln.Addr().String()}, io.Discard)
	if err == nil || errors.Is(err, flag.ErrHelp) {
		t.Fatalf("run on a busy address: err=%v, want a listen error", err)
	}
}
