package inventorysim_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"paygateway/gateway/inventory/inventorysim"
)

// call sends one request and returns the status and body.
func call(t *testing.T, method, url, key, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatalf("new request: %v", err)
	}
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return resp.StatusCode, string(b)
}

func newServer(t *testing.T) (*inventorysim.Sim, string) {
	t.Helper()
	s := inventorysim.New()
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	return s, srv.URL
}

const (
	confirmBody = `{"key":"k1","out_trade_no":"T1","amount_total":100}`
	releaseBody = `{"key":"r1","out_refund_no":"R1","out_trade_no":"T1","amount":100}`
)

func TestContract(t *testing.T) {
	s, url := newServer(t)
	steps := []struct {
		name, method, path, key, body string
		wantStatus                    int
		wantInBody                    string
	}{
		{"confirm", "POST", "/confirmations", "k1", confirmBody, 201, `"status":"CONFIRMED"`},
		{"confirm replay", "POST", "/confirmations", "k1", confirmBody, 200, `"amount_total":100`},
		{"confirm mismatch", "POST", "/confirmations", "k1",
			`{"key":"k1","out_trade_no":"T1","amount_total":101}`, 409, `"code":"IDEMPOTENCY_MISMATCH"`},
		{"get confirmation", "GET", "/confirmations/k1", "", "", 200, `"key":"k1"`},
		{"get missing confirmation", "GET", "/confirmations/nope", "", "", 404, `"code":"NOT_FOUND"`},
		{"release", "POST", "/releases", "r1", releaseBody, 201, `"status":"RELEASED"`},
		{"release replay", "POST", "/releases", "r1", releaseBody, 200, `"out_refund_no":"R1"`},
		{"release mismatch", "POST", "/releases", "r1",
			`{"key":"r1","out_refund_no":"R2","out_trade_no":"T1","amount":100}`, 409, "IDEMPOTENCY_MISMATCH"},
		{"get release", "GET", "/releases/r1", "", "", 200, `"status":"RELEASED"`},
		{"get missing release", "GET", "/releases/nope", "", "", 404, "NOT_FOUND"},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			status, body := call(t, st.method, url+st.path, st.key, st.body)
			if status != st.wantStatus {
				t.Fatalf("status=%d, want %d (body %s)", status, st.wantStatus, body)
			}
			if !strings.Contains(body, st.wantInBody) {
				t.Fatalf("body=%s, want it to contain %s", body, st.wantInBody)
			}
		})
	}
	if s.ConfirmCount("T1") != 1 || s.ReleaseCount("T1") != 1 || s.AppliedByKey("k1") != 1 || s.AppliedByKey("r1") != 1 {
		t.Fatalf("counts: confirm=%d release=%d", s.ConfirmCount("T1"), s.ReleaseCount("T1"))
	}
	want := inventorysim.Stats{Confirmations: 1, Releases: 1, Posts: 6, Gets: 4, Duplicates: 2, Mismatches: 2}
	if got := s.Stats(); got != want {
		t.Fatalf("stats=%+v, want %+v", got, want)
	}
}

// TestReleaseBeforeConfirmationIsCounted: the contract releases stock
// only after it was confirmed; the simulator applies such a release (a
// real service might too) and counts it, so a checker can fail the run.
func TestReleaseBeforeConfirmationIsCounted(t *testing.T) {
	s, url := newServer(t)
	if status, body := call(t, "POST", url+"/releases", "r1", releaseBody); status != 201 {
		t.Fatalf("release: %d %s", status, body)
	}
	if status, body := call(t, "POST", url+"/confirmations", "k1", confirmBody); status != 201 {
		t.Fatalf("confirm: %d %s", status, body)
	}
	if status, _ := call(t, "POST", url+"/releases", "r2", `{"key":"r2","out_refund_no":"R2","out_trade_no":"T1","amount":10}`); status != 201 {
		t.Fatalf("release after the confirmation: %d", status)
	}
	if n := s.Stats().Unconfirmed; n != 1 {
		t.Fatalf("unconfirmed releases = %d, want 1 (only the first)", n)
	}
}

func TestReplayKeepsCreatedAt(t *testing.T) {
	_, url := newServer(t)
	var first, second inventorysim.ConfirmationRecord
	for _, rec := range []*inventorysim.ConfirmationRecord{&first, &second} {
		_, body := call(t, "POST", url+"/confirmations", "k1", confirmBody)
		if err := json.Unmarshal([]byte(body), rec); err != nil {
			t.Fatalf("decode %s: %v", body, err)
		}
	}
	if !first.CreatedAt.Equal(second.CreatedAt) || first.CreatedAt.IsZero() {
		t.Fatalf("created_at %v then %v, want the same stored time", first.CreatedAt, second.CreatedAt)
	}
}

func TestInvalidWrites(t *testing.T) {
	cases := []struct {
		name, path, key, body string
	}{
		{"not json", "/confirmations", "k1", `{`},
		{"unknown field", "/confirmations", "k1", `{"key":"k1","out_trade_no":"T1","amount_total":1,"x":1}`},
		{"missing key", "/confirmations", "", `{"out_trade_no":"T1","amount_total":1}`},
		{"zero amount", "/confirmations", "k1", `{"key":"k1","out_trade_no":"T1","amount_total":0}`},
		{"float amount", "/confirmations", "k1", `{"key":"k1","out_trade_no":"T1","amount_total":1.5}`},
		{"header missing", "/confirmations", "", confirmBody},
		{"header differs", "/confirmations", "k2", confirmBody},
		{"trailing data", "/confirmations", "k1", confirmBody + `{}`},
		{"release without refund", "/releases", "r1", `{"key":"r1","out_trade_no":"T1","amount":1}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, url := newServer(t)
			status, body := call(t, "POST", url+tc.path, tc.key, tc.body)
			if status != http.StatusBadRequest || !strings.Contains(body, "INVALID_REQUEST") {
				t.Fatalf("status=%d body=%s, want 400 INVALID_REQUEST", status, body)
			}
			if st := s.Stats(); st.Invalid != 1 || st.Confirmations+st.Releases != 0 {
				t.Fatalf("stats=%+v, want one invalid and nothing applied", st)
			}
		})
	}
}

func TestFaultScope(t *testing.T) {
	cases := []struct {
		name                  string
		only                  string
		wantPost, wantGet     int
		wantFaults, wantPost2 int
	}{
		{"default hits writes", "", 500, 404, 1, 201},
		{"writes", inventorysim.OnlyWrites, 500, 404, 1, 201},
		{"reads", inventorysim.OnlyReads, 201, 500, 1, 200},
		{"all", inventorysim.OnlyAll, 500, 500, 2, 201},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, url := newServer(t)
			s.SetFaults(inventorysim.Faults{ErrorRate: 1, Only: tc.only})
			post, _ := call(t, "POST", url+"/confirmations", "k1", confirmBody)
			get, _ := call(t, "GET", url+"/confirmations/k1", "", "")
			if post != tc.wantPost || get != tc.wantGet {
				t.Fatalf("post=%d get=%d, want %d %d", post, get, tc.wantPost, tc.wantGet)
			}
			if got := s.Stats().Faults; got != tc.wantFaults {
				t.Fatalf("faults=%d, want %d", got, tc.wantFaults)
			}
			s.SetFaults(inventorysim.Faults{})
			if post, _ := call(t, "POST", url+"/confirmations", "k1", confirmBody); post != tc.wantPost2 {
				t.Fatalf("post after clearing faults=%d, want %d", post, tc.wantPost2)
			}
		})
	}
}

func TestNextCountersAreConsumed(t *testing.T) {
	s, url := newServer(t)
	s.SetFaults(inventorysim.Faults{PermanentNext: 1, FailNext: 2})
	want := []int{422, 500, 500, 201}
	for i, w := range want {
		if got, _ := call(t, "POST", url+"/confirmations", "k1", confirmBody); got != w {
			t.Fatalf("request %d: status=%d, want %d", i, got, w)
		}
	}
	if st := s.Stats(); st.Permanents != 1 || st.Errors != 2 || st.Faults != 3 {
		t.Fatalf("stats=%+v", st)
	}
}

func TestControlEndpoints(t *testing.T) {
	s, url := newServer(t)
	cases := []struct {
		name, method, path, body string
		wantStatus               int
		wantInBody               string
	}{
		{"set faults", "POST", "/sim/faults", `{"error_rate":0.5,"latency":"5ms","fail_next":1}`, 200, `"latency":"5ms"`},
		{"get faults", "GET", "/sim/faults", "", 200, `"error_rate":0.5`},
		{"faults nanoseconds", "POST", "/sim/faults", `{"latency":1000000}`, 200, `"latency":"1ms"`},
		{"rates over 1", "POST", "/sim/faults", `{"error_rate":0.6,"drop_rate":0.6}`, 400, "INVALID_FAULTS"},
		{"unknown fault", "POST", "/sim/faults", `{"eror_rate":0.5}`, 400, "INVALID_FAULTS"},
		{"bad duration", "POST", "/sim/faults", `{"latency":"soon"}`, 400, "INVALID_FAULTS"},
		{"bad scope", "POST", "/sim/faults", `{"only":"deletes"}`, 400, "INVALID_FAULTS"},
		{"clear faults", "POST", "/sim/faults", `{}`, 200, `"error_rate":0`},
		{"confirm", "POST", "/confirmations", confirmBody, 201, "CONFIRMED"},
		{"list confirmations", "GET", "/sim/confirmations", "", 200, `"applied":1`},
		{"list releases", "GET", "/sim/releases", "", 200, `[]`},
		{"order counts", "GET", "/sim/orders/T1", "", 200, `"confirmed":1,"released":0`},
		{"stats", "GET", "/sim/stats", "", 200, `"confirmations":1`},
		{"reset", "POST", "/sim/reset", "", 204, ""},
		{"stats after reset", "GET", "/sim/stats", "", 200, `"confirmations":0`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, body := call(t, tc.method, url+tc.path, "k1", tc.body)
			if status != tc.wantStatus || !strings.Contains(body, tc.wantInBody) {
				t.Fatalf("status=%d body=%s, want %d containing %s", status, body, tc.wantStatus, tc.wantInBody)
			}
		})
	}
	if got := s.ConfirmCount("T1"); got != 0 {
		t.Fatalf("ConfirmCount after reset=%d, want 0", got)
	}
}

func TestFaultsJSONRoundTrip(t *testing.T) {
	in := inventorysim.Faults{ErrorRate: 0.1, DropNext: 2, Latency: 250 * time.Millisecond,
		ApplyThenTimeoutDelay: 3 * time.Second, ApplyThenDrop: true, Only: inventorysim.OnlyAll}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatalf("marshal: %v", err)
	}
	var out inventorysim.Faults
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("unmarshal %s: %v", b, err)
	}
	if out != in {
		t.Fatalf("round trip %s gave %+v, want %+v", b, out, in)
	}
}

func TestServeShutsDownWithStalledRequest(t *testing.T) {
	s := inventorysim.New()
	s.SetFaults(inventorysim.Faults{ApplyThenTimeoutNext: 1, ApplyThenTimeoutDelay: time.Minute})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- inventorysim.Serve(ctx, ln, s) }()

	stalled := make(chan error, 1)
	go func() {
		req, _ := http.NewRequest("POST", "http://"+ln.Addr().String()+"/confirmations", strings.NewReader(confirmBody))
		req.Header.Set("Idempotency-Key", "k1")
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			err = errors.New("got an answer, want the connection closed")
		}
		stalled <- err
	}()
	waitFor(t, func() bool { return s.AppliedByKey("k1") == 1 })
	cancel()
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatalf("Serve still running 3s after cancel")
	}
	<-stalled
}

func TestRunReportsListenError(t *testing.T) {
	if err := inventorysim.Run(context.Background(), "256.0.0.1:1", inventorysim.New()); err == nil {
		t.Fatalf("Run on a bad address: nil error")
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met in 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestResentBlind: a key sent again with no query of it answered "not
// found" since counts as resent blind, a replay after a query that found
// it too; a send after a "not found" does not, even when the earlier
// send lands after it (a stale request), nor does a query of a key never
// sent.
func TestResentBlind(t *testing.T) {
	s, url := newServer(t)
	for _, st := range []struct{ method, path, key, body string }{
		{"POST", "/confirmations", "k1", confirmBody},
		{"POST", "/confirmations", "k1", confirmBody}, // blind: 1
		{"GET", "/confirmations/k1", "", ""},          // found: no leave to send again
		{"POST", "/confirmations", "k1", confirmBody}, // blind: 2
		{"GET", "/releases/r1", "", ""},               // not found
		{"POST", "/releases", "r1", releaseBody},
		{"POST", "/releases", "r1", releaseBody}, // the stale first send landing late
		{"GET", "/confirmations/k9", "", ""},     // never sent
	} {
		call(t, st.method, url+st.path, st.key, st.body)
	}
	got := s.ResentBlind()
	if len(got) != 1 || got["k1"] != 2 {
		t.Fatalf("ResentBlind = %v, want k1: 2", got)
	}
	call(t, "POST", url+"/releases", "r1", releaseBody)
	if got := s.ResentBlind(); got["r1"] != 1 {
		t.Fatalf("ResentBlind = %v, want r1: 1 after a third send on one \"not found\"", got)
	}
}
