package inventory_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"paygateway/gateway/inventory/inventorysim"
	"paygateway/ledger"
	"paygateway/ledger/ledgertest"
	"paygateway/retry"
)

// refused answers a confirmation 400: refused for good, not applied.
func refused(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusBadRequest)
	_, _ = w.Write([]byte(`{"code":"BAD_REQUEST"}`))
}

// lost answers a confirmation 502 without applying it: its outcome is
// unknown to the gateway.
func lost(w http.ResponseWriter, _ *http.Request) {
	http.Error(w, `{"code":"BAD_GATEWAY"}`, http.StatusBadGateway)
}

// odd answers a confirmation 200 with a record of its key for another
// order: the service took something under the key, so the request may be
// in effect, though the client cannot call it done.
func odd(w http.ResponseWriter, r *http.Request) {
	var cf struct {
		Key string `json:"key"`
	}
	_ = json.NewDecoder(r.Body).Decode(&cf)
	w.Header().Set("Content-Type", "application/json")
	_, _ = fmt.Fprintf(w, `{"key":%q,"status":"CONFIRMED","out_trade_no":"another-order","amount_total":100}`, cf.Key)
}

// TestReplayedConfirmationNeverSentIsSkipped: a confirmation's only
// attempt is refused (400) and it goes dead; the order is then refunded
// in full through the gateway, its release held behind the dead
// confirmation. A person replays the confirmation: its attempt is not the
// first, but nothing was ever sent that could take effect, so it is
// skipped as a first attempt would be, and so is the release. Stock never
// moves for money that went back. A confirmation whose only attempt got a
// 2xx naming another order is dead too, but the service took something
// under its key: it may be in effect, so the replay sends it (the query
// first) and the release follows.
func TestReplayedConfirmationNeverSentIsSkipped(t *testing.T) {
	cases := []struct {
		name   string
		first  http.HandlerFunc
		unsent bool
	}{
		{"refused", refused, true},
		{"2xx for another order", odd, false},
	}
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		for i, tc := range cases {
			no := fmt.Sprintf("rp-dead-%d", i)
			sim := inventorysim.New()
			srv := httptest.NewServer(confirmations(sim, tc.first))
			pool := confirmPool(s, srv.URL)
			pay(t, s, no)
			dead := runUntil(t, pool, s, no, ledger.JobDead)
			if dead.MaybeSent == tc.unsent || dead.History[0].Unsent != tc.unsent {
				t.Fatalf("%s: dead confirmation %+v; want stored unsent %v", tc.name, dead, tc.unsent)
			}
			refundHere(t, s, no, 100)
			if _, err := s.Outbox().Replay(context.Background(), dead.ID, "ops:test"); err != nil {
				t.Fatal(err)
			}
			jobs := runAllDone(t, pool, s, no)
			srv.Close()
			want, outcome := 1, retry.OutcomeDone
			if tc.unsent {
				want, outcome = 0, retry.OutcomeSkipped
			}
			if c, r := sim.ConfirmCount(no), sim.ReleaseCount(no); c != want || r != want {
				t.Fatalf("%s: inventory confirmed %d, released %d for an order refunded in full; want %d, %d",
					tc.name, c, r, want, want)
			}
			for _, j := range jobs {
				if last := j.History[len(j.History)-1]; last.Outcome != outcome {
					t.Fatalf("%s: %s's last attempt %+v; want %s", tc.name, j.Kind, last, outcome)
				}
			}
		}
	})
}

// TestReplayAfterAMaybeSentAttemptIsNotSkipped: attempt 1 is refused and
// the job dies; the replayed attempt 2 gets a 502 (it may have been
// applied, or may still be); then the order is refunded in full. Attempt 3
// must not skip: one earlier attempt may have sent the confirmation, so it
// is sent under its key and the release follows, netting to nothing.
func TestReplayAfterAMaybeSentAttemptIsNotSkipped(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		const no = "rp-lost"
		sim := inventorysim.New()
		srv := httptest.NewServer(confirmations(sim, refused, lost))
		defer srv.Close()
		pool := confirmPool(s, srv.URL)
		pay(t, s, no)
		dead := runUntil(t, pool, s, no, ledger.JobDead)
		if _, err := s.Outbox().Replay(ctx, dead.ID, "ops:test"); err != nil {
			t.Fatal(err)
		}
		if n, err := pool.RunOnce(ctx, "t-w0"); n != 1 || err != nil { // attempt 2: 502
			t.Fatalf("RunOnce = %d, %v", n, err)
		}
		refundHere(t, s, no, 100)
		jobs := runAllDone(t, pool, s, no)
		if c, r := sim.ConfirmCount(no), sim.ReleaseCount(no); c != 1 || r != 1 {
			t.Fatalf("inventory confirmed %d, released %d (jobs %+v); want 1, 1", c, r, jobs)
		}
	})
}

// runAllDone runs the pool until every job of order no is DONE.
func runAllDone(t *testing.T, pool *retry.Pool, s *ledger.Store, no string) []ledger.OutboxJob {
	t.Helper()
	var jobs []ledger.OutboxJob
	for range 200 {
		if _, err := pool.RunOnce(context.Background(), "t-w0"); err != nil {
			t.Fatal(err)
		}
		var err error
		if jobs, err = s.Outbox().JobsOf(context.Background(), no); err != nil {
			t.Fatal(err)
		}
		done := 0
		for _, j := range jobs {
			if j.State == ledger.JobDone {
				done++
			}
		}
		if done == len(jobs) {
			return jobs
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("jobs of %s never all done: %+v", no, jobs)
	return nil
}
