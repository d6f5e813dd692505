package gateway

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"paygateway/ledger"
	"paygateway/ledger/ledgertest"
)

// TestBatcherDropsUpdatesNobodyWaitsFor: an update whose caller gave up
// before its batch ran is answered with the caller's error and never
// reaches the store (nil here: touching it would panic).
func TestBatcherDropsUpdatesNobodyWaitsFor(t *testing.T) {
	b := &batcher{timeout: time.Second}
	gone, cancel := context.WithCancel(context.Background())
	cancel()
	late, stop := context.WithTimeout(context.Background(), time.Nanosecond)
	defer stop()
	time.Sleep(time.Millisecond)
	items := []*batchItem{{ctx: gone, done: make(chan error, 1)}, {ctx: late, done: make(chan error, 1)}}
	b.run(items)
	if err := <-items[0].done; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled caller: err = %v", err)
	}
	if err := <-items[1].done; !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("caller past its deadline: err = %v", err)
	}
}

// TestPanickingBatchFailsItsCallers: a panic while applying a batch (here
// the nil store) answers each of its callers with an error (503, so WeChat
// Pay redelivers) instead of ending the process.
func TestPanickingBatchFailsItsCallers(t *testing.T) {
	b := &batcher{timeout: time.Second}
	// One update is applied on the batcher's goroutine, two of one order
	// each on a goroutine of their own.
	for _, n := range []int{1, 2} {
		items := make([]*batchItem, n)
		for i := range items {
			items[i] = &batchItem{ctx: context.Background(), done: make(chan error, 1)}
			items[i].u.OutTradeNo, items[i].u.Notice.NotifyID = "o-1", fmt.Sprintf("n-%d", i)
		}
		b.run(items)
		for _, it := range items {
			if err := <-it.done; err == nil || !strings.Contains(err.Error(), "panic") {
				t.Fatalf("batch of %d, %s: err = %v, want the panic as an error", n, it.u.Notice.NotifyID, err)
			}
		}
	}
	if status := Status(ledgerError(errors.New("apply notification n-1: panic: boom"))); status != 503 {
		t.Fatalf("a panicked apply is answered %d, want 503", status)
	}
}

// TestBatchLogsNameTheirRequests: an anomaly flagged while a batch of
// notifications is applied is logged with the id of the request that
// brought it (a batch of one), or the ids of all its requests, and
// without its detail, which names the payers' openids.
func TestBatchLogsNameTheirRequests(t *testing.T) {
	s := ledgertest.OpenSQLite(t)
	logs := captureLogs(t)
	b := &batcher{store: s, timeout: 5 * time.Second}
	ctx := context.Background()
	batches := [][]string{{"or-log-1"}, {"or-log-2", "or-log-3"}}
	for _, nos := range batches {
		items := make([]*batchItem, len(nos))
		for i, no := range nos {
			if _, err := s.RegisterOrder(ctx, ledger.Order{OutTradeNo: no, AmountTotal: 100, PayerOpenID: "o-registered",
				ExpireAt: time.Now().Add(time.Hour)}); err != nil {
				t.Fatal(err)
			}
			u := ledger.TransactionUpdate{Notice: ledger.Notice{NotifyID: "n-" + no, Source: ledger.SourceCallback,
				EventType: "TRANSACTION.SUCCESS", OutTradeNo: no, TransactionID: "tx-" + no},
				OutTradeNo: no, TransactionID: "tx-" + no, TradeState: "SUCCESS", PayerOpenID: "o-someone-else",
				AmountTotal: 100, PayerTotal: 100, Currency: "CNY"}
			items[i] = &batchItem{ctx: WithRequestID(ctx, "req-"+no), u: u, done: make(chan error, 1)}
		}
		b.run(items)
		for _, it := range items {
			if err := <-it.done; err != nil {
				t.Fatal(err)
			}
		}
	}
	want := map[string]string{"or-log-1": "req-or-log-1", "or-log-2": "req-or-log-2,req-or-log-3",
		"or-log-3": "req-or-log-2,req-or-log-3"}
	lines := logLines(t, logs.String(), "anomaly flagged")
	if len(lines) != len(want) {
		t.Fatalf("%d anomaly lines, want %d:\n%s", len(lines), len(want), logs.String())
	}
	for _, l := range lines {
		if no, _ := l["out_trade_no"].(string); l["request_id"] != want[no] {
			t.Errorf("anomaly of %s logged with request_id %v, want %s", no, l["request_id"], want[no])
		}
	}
	if strings.Contains(logs.String(), "o-someone-else") || strings.Contains(logs.String(), "o-registered") {
		t.Errorf("a payer's openid is in the logs:\n%s", logs.String())
	}
}
