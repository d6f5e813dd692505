package main

import (
	"context"
	"fmt"
	"testing"
	"time"

	"paygateway/gateway/inventory/inventorysim"
	"paygateway/ledger"
)

// TestStockOfAnOrderRefundedFirst: an order's stock confirmation that has
// not taken effect when the order is refunded in full is not sent, and
// then neither is any release of its stock; one that took effect (its
// answer lost) is kept and its stock released; a partial refund changes
// nothing. The jobs read the ledger when they run, not as it was at
// payment.
func TestStockOfAnOrderRefundedFirst(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			inv, url := startInventory(t)
			cfg := testConfig(t, b)
			fastOutbox(&cfg, url)
			cfg.Outbox.InitialInterval, cfg.Outbox.MaxInterval = 300*time.Millisecond, 300*time.Millisecond
			m := startGateway(t, cfg)
			cases := []struct {
				name             string
				faults           inventorysim.Faults
				refund           int64 // of 100
				confirm, release int
				confirmHistory   string
				releaseHistory   string
			}{
				{"failed, then refunded in full", inventorysim.Faults{FailNext: 1}, 100, 0, 0, "[retry skipped]", "[skipped]"},
				{"applied, answer lost, then refunded in full",
					inventorysim.Faults{ApplyThenTimeoutNext: 1, ApplyThenTimeoutDelay: 3 * time.Second}, 100, 1, 1, "[retry done]", "[done]"},
				{"failed, then refunded in part", inventorysim.Faults{FailNext: 1}, 60, 1, 1, "[retry done]", "[done]"},
			}
			for _, tc := range cases {
				no := uniqueNo("srf")
				inv.SetFaults(tc.faults)
				payViaCallback(t, m, no, 100)
				waitFor(t, 20*time.Second, "the first attempt of "+no, func() bool {
					return len(onlyJob(t, m.Store, no, ledger.JobPending).History) == 1
				})
				refundInFull(t, m.Store, no, tc.refund)
				jobs := waitJobsDone(t, m.Store, no, 2)
				got := fmt.Sprintf("%v %v %d %d", outcomes(jobs[0].History), outcomes(jobs[1].History), inv.ConfirmCount(no), inv.ReleaseCount(no))
				want := fmt.Sprintf("%s %s %d %d", tc.confirmHistory, tc.releaseHistory, tc.confirm, tc.release)
				if got != want {
					t.Errorf("%s: confirmation, release histories, confirmed, released = %s, want %s", tc.name, got, want)
				}
			}
		})
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
