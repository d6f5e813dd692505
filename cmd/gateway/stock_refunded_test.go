package main

import (
	"context"
	"fmt"
	"testing"
	"time"

	"paygateway/gateway/inventory/inventorysim"
	"paygateway/ledger"
)

// TestStockOfAnOrderRefundedFirst: a stock confirmation never sent when
// its order is refunded in full is not sent, and then neither is any
// release of its stock. Once one attempt was made (its outcome unknown:
// it may still land), confirm-then-release stands, as it does for one
// that took effect with its answer lost, and for a partial refund.
func TestStockOfAnOrderRefundedFirst(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			inv, url := startInventory(t)
			cfg := testConfig(t, b)
			fastOutbox(&cfg, url)
			cfg.Outbox.InitialInterval, cfg.Outbox.MaxInterval = 300*time.Millisecond, 300*time.Millisecond
			workers := cfg.Outbox.Workers
			cfg.Outbox.Workers = 0 // jobs wait until the test's own pool runs
			m := startGateway(t, cfg)
			unsent := uniqueNo("srf")
			payViaCallback(t, m, unsent, 100)
			refundInFull(t, m.Store, unsent, 100)
			cfg.Outbox.Workers = workers
			runPool(t, newOutboxPool(cfg, m.Store, "stock-test", nil))
			checkStock(t, inv, m.Store, unsent, "[skipped] [skipped] 0 0")

			cases := []struct {
				name   string
				faults inventorysim.Faults
				refund int64 // of 100
			}{
				{"failed (outcome unknown), then refunded in full", inventorysim.Faults{FailNext: 1}, 100},
				{"applied, answer lost, then refunded in full",
					inventorysim.Faults{ApplyThenTimeoutNext: 1, ApplyThenTimeoutDelay: 3 * time.Second}, 100},
				{"failed, then refunded in part", inventorysim.Faults{FailNext: 1}, 60},
			}
			for _, tc := range cases {
				no := uniqueNo("srf")
				inv.SetFaults(tc.faults)
				payViaCallback(t, m, no, 100)
				waitFor(t, 20*time.Second, "the first attempt of "+no, func() bool {
					return len(onlyJob(t, m.Store, no, ledger.JobPending).History) == 1
				})
				refundInFull(t, m.Store, no, tc.refund)
				checkStock(t, inv, m.Store, no, "[retry done] [done] 1 1")
			}
		})
	}
}

// checkStock waits for order no's confirmation and release to be done
// and compares their histories and the inventory's counts with want.
func checkStock(t *testing.T, inv *inventorysim.Sim, s *ledger.Store, no, want string) {
	t.Helper()
	jobs := waitJobsDone(t, s, no, 2)
	got := fmt.Sprintf("%v %v %d %d", outcomes(jobs[0].History), outcomes(jobs[1].History), inv.ConfirmCount(no), inv.ReleaseCount(no))
	if got != want {
		t.Errorf("%s: confirmation, release histories, confirmed, released = %s, want %s", no, got, want)
	}
}

// refundInFull records a refund of amount for order no through the
// ledger's state machine, up to SUCCESS.
func refundInFull(t *testing.T, s *ledger.Store, no string, amount int64) {
	t.Helper()
	ctx := context.Background()
	rno := "R" + no
	_, err := s.CreateRefund(ctx, ledger.RefundRequest{OutTradeNo: no, OutRefundNo: rno, Amount: amount,
		Requester: "openid-" + no, CheckAt: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	for _, to := range []ledger.RefundState{ledger.RefundProcessing, ledger.RefundSuccess} {
		if _, err := s.ApplyRefund(ctx, ledger.RefundUpdate{OutRefundNo: rno, State: to, Source: ledger.SourceQuery}); err != nil {
			t.Fatalf("refund %s → %s: %v", rno, to, err)
		}
	}
}

// waitJobsDone waits until order no has n jobs, all DONE, and returns
// them, the confirmation first.
func waitJobsDone(t *testing.T, s *ledger.Store, no string, n int) []ledger.OutboxJob {
	t.Helper()
	var jobs []ledger.OutboxJob
	waitFor(t, 20*time.Second, fmt.Sprintf("%d jobs of %s done", n, no), func() bool {
		var err error
		if jobs, err = s.Outbox().JobsOf(context.Background(), no); err != nil {
			t.Fatal(err)
		}
		done := len(jobs) == n
		for _, j := range jobs {
			done = done && j.State == ledger.JobDone
		}
		return done
	})
	if jobs[0].Kind != ledger.JobConfirmInventory {
		t.Fatalf("first job of %s is a %s", no, jobs[0].Kind)
	}
	return jobs
}
