package inventory_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"paygateway/gateway/inventory"
)

// fixed answers every request with status and body and records the last
// Idempotency-Key it saw.
func fixed(t *testing.T, status int, body string) (*inventory.Client, *atomic.Value) {
	t.Helper()
	var key atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key.Store(r.Header.Get("Idempotency-Key"))
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Location", "/elsewhere")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}))
	t.Cleanup(srv.Close)
	return inventory.New(inventory.Config{BaseURL: srv.URL + "/", Timeout: time.Second}), &key
}

const confirmed = `{"key":"k1","out_trade_no":"T1","amount_total":100,"status":"CONFIRMED"}`

func TestConfirmClassifiesStatus(t *testing.T) {
	cases := []struct {
		name    string
		status  int
		body    string
		wantErr func(error) bool
	}{
		{"created", 201, confirmed, nil},
		{"replayed", 200, confirmed, nil},
		{"2xx not a record", 200, "<html>ok</html>", inventory.IsUnknown},
		{"2xx wrong status", 200, `{"key":"k1","status":"RELEASED"}`, inventory.IsUnknown},
		{"2xx other key", 200, `{"key":"k2","status":"CONFIRMED"}`, inventory.IsUnknown},
		{"redirect", 302, "", inventory.IsUnknown},
		{"bad request", 400, `{"code":"INVALID_REQUEST"}`, inventory.IsPermanent},
		{"unauthorized", 401, "", inventory.IsUnknown},
		{"forbidden by a WAF", 403, "", inventory.IsUnknown},
		{"proxy wants credentials", 407, "", inventory.IsUnknown},
		{"gone", 410, "", inventory.IsPermanent},
		{"not found", 404, "", inventory.IsUnknown},
		{"request timeout", 408, "", inventory.IsUnknown},
		{"conflict", 409, `{"code":"OTHER"}`, inventory.IsUnknown},
		{"key mismatch", 409, `{"code":"IDEMPOTENCY_MISMATCH"}`, inventory.IsPermanent},
		{"unprocessable", 422, `{"code":"OUT_OF_STOCK"}`, inventory.IsPermanent},
		{"too early", 425, "", inventory.IsUnknown},
		{"too many requests", 429, "", inventory.IsUnknown},
		{"internal", 500, "", inventory.IsUnknown},
		{"bad gateway", 502, "", inventory.IsUnknown},
		{"unavailable", 503, "", inventory.IsUnknown},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, key := fixed(t, tc.status, tc.body)
			err := c.Confirm(context.Background(), inventory.Confirmation{Key: "k1", OutTradeNo: "T1", AmountTotal: 100})
			checkErr(t, err, tc.wantErr)
			if got := key.Load(); got != "k1" {
				t.Fatalf("Idempotency-Key=%v, want k1", got)
			}
			if err != nil && !strings.Contains(err.Error(), "confirm inventory for T1") {
				t.Fatalf("err=%q lacks context", err)
			}
		})
	}
}

func TestPermanentErrorFields(t *testing.T) {
	c, _ := fixed(t, 422, `{"code":"OUT_OF_STOCK","message":"none left"}`)
	err := c.Release(context.Background(), inventory.Release{Key: "k1", OutRefundNo: "R1", OutTradeNo: "T1", Amount: 1})
	var pe *inventory.PermanentError
	if !errors.As(err, &pe) {
		t.Fatalf("err=%v, want *PermanentError", err)
	}
	if pe.Status != 422 || pe.Code != "OUT_OF_STOCK" || !strings.Contains(pe.Body, "none left") {
		t.Fatalf("PermanentError=%+v", pe)
	}
}

func TestDoneClassifiesStatus(t *testing.T) {
	cases := []struct {
		name     string
		status   int
		body     string
		wantDone bool
		wantErr  func(error) bool
	}{
		{"found", 200, `{"key":"k1","status":"RELEASED"}`, true, nil},
		{"not found", 404, `{"code":"NOT_FOUND"}`, false, nil},
		{"bare 404 from a proxy", 404, "404 page not found\n", false, inventory.IsUnknown},
		{"404 with another code", 404, `{"code":"NO_ROUTE"}`, false, inventory.IsUnknown},
		{"found wrong kind", 200, `{"key":"k1","status":"CONFIRMED"}`, false, inventory.IsUnknown},
		{"bad request", 400, "", false, inventory.IsUnknown}, // says nothing of an earlier send
		{"credentials refused", 401, `{"code":"UNAUTHORIZED"}`, false, inventory.IsUnknown},
		{"forbidden by a WAF", 403, "", false, inventory.IsUnknown},
		{"too many requests", 429, "", false, inventory.IsUnknown},
		{"unavailable", 503, "", false, inventory.IsUnknown},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, key := fixed(t, tc.status, tc.body)
			done, err := c.ReleaseDone(context.Background(), inventory.Release{Key: "k1"})
			checkErr(t, err, tc.wantErr)
			if done != tc.wantDone {
				t.Fatalf("done=%v, want %v", done, tc.wantDone)
			}
			if got := key.Load(); got != "k1" {
				t.Fatalf("Idempotency-Key=%v, want k1", got)
			}
		})
	}
}

func TestTransportFailuresAreUnknown(t *testing.T) {
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body) // until EOF, so the server notices the client leaving
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	}))
	t.Cleanup(hang.Close)
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()
	canceled, cancel := context.WithCancel(context.Background())
	cancel()

	cases := []struct {
		name    string
		url     string
		ctx     context.Context
		wantIs  error
		timeout time.Duration
	}{
		{"per-call timeout", hang.URL, context.Background(), context.DeadlineExceeded, 100 * time.Millisecond},
		{"caller deadline", hang.URL, ctxWithTimeout(t, 100*time.Millisecond), context.DeadlineExceeded, time.Minute},
		{"caller canceled", hang.URL, canceled, context.Canceled, time.Minute},
		{"connection refused", closed.URL, context.Background(), nil, time.Second},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := inventory.New(inventory.Config{BaseURL: tc.url, Timeout: tc.timeout})
			err := c.Confirm(tc.ctx, inventory.Confirmation{Key: "k1", OutTradeNo: "T1", AmountTotal: 1})
			checkErr(t, err, inventory.IsUnknown)
			if tc.wantIs != nil && !errors.Is(err, tc.wantIs) {
				t.Fatalf("err=%v, want it to wrap %v", err, tc.wantIs)
			}
		})
	}
}

func ctxWithTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestInvalidRequestIsPermanentAndNotSent(t *testing.T) {
	e := newEnv(t, time.Second)
	ctx := context.Background()
	cases := []struct {
		name string
		call func() error
	}{
		{"confirm without key", func() error {
			return e.client.Confirm(ctx, inventory.Confirmation{OutTradeNo: "T1", AmountTotal: 1})
		}},
		{"confirm zero amount", func() error {
			return e.client.Confirm(ctx, inventory.Confirmation{Key: "k", OutTradeNo: "T1"})
		}},
		{"release without refund", func() error {
			return e.client.Release(ctx, inventory.Release{Key: "k", OutTradeNo: "T1", Amount: 1})
		}},
		{"done without key", func() error {
			_, err := e.client.ConfirmationDone(ctx, inventory.Confirmation{})
			return err
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			checkErr(t, tc.call(), inventory.IsPermanent)
		})
	}
	if st := e.sim.Stats(); st.Posts+st.Gets != 0 {
		t.Fatalf("requests sent=%d, want 0", st.Posts+st.Gets)
	}
}

func TestKeyIsPathEscaped(t *testing.T) {
	e := newEnv(t, time.Second)
	ctx := context.Background()
	key := "pay/T 1?x"
	if err := e.client.Confirm(ctx, inventory.Confirmation{Key: key, OutTradeNo: "T1", AmountTotal: 1}); err != nil {
		t.Fatalf("confirm: %v", err)
	}
	if done, err := e.client.ConfirmationDone(ctx, inventory.Confirmation{Key: key, OutTradeNo: "T1", AmountTotal: 1}); err != nil || !done {
		t.Fatalf("done=%v err=%v, want true, nil", done, err)
	}
}

// TestRecordComparesTheOperationsFields: a confirmation's record is
// compared on out_trade_no and amount_total only (an extra field such as
// amount is not its business), a release's on out_trade_no, out_refund_no
// and amount; fields the service leaves out are not compared.
func TestRecordComparesTheOperationsFields(t *testing.T) {
	cf := inventory.Confirmation{Key: "k1", OutTradeNo: "T1", AmountTotal: 100}
	rel := inventory.Release{Key: "k1", OutRefundNo: "R1", OutTradeNo: "T1", Amount: 30}
	cases := []struct {
		name, body string
		release    bool
		mismatch   bool
	}{
		{"confirmation with a stray amount", `{"key":"k1","status":"CONFIRMED","out_trade_no":"T1","amount_total":100,"amount":7}`, false, false},
		{"confirmation with the key only", `{"key":"k1","status":"CONFIRMED"}`, false, false},
		{"confirmation of another order", `{"key":"k1","status":"CONFIRMED","out_trade_no":"T2","amount_total":100}`, false, true},
		{"confirmation of another amount", `{"key":"k1","status":"CONFIRMED","out_trade_no":"T1","amount_total":99}`, false, true},
		{"release with a stray amount_total", `{"key":"k1","status":"RELEASED","out_refund_no":"R1","out_trade_no":"T1","amount":30,"amount_total":100}`, true, false},
		{"release of another refund", `{"key":"k1","status":"RELEASED","out_refund_no":"R2","out_trade_no":"T1","amount":30}`, true, true},
		{"release of another amount", `{"key":"k1","status":"RELEASED","out_refund_no":"R1","out_trade_no":"T1","amount":31}`, true, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := fixed(t, 200, tc.body)
			var done bool
			var err error
			if tc.release {
				done, err = c.ReleaseDone(context.Background(), rel)
			} else {
				done, err = c.ConfirmationDone(context.Background(), cf)
			}
			if tc.mismatch != errors.Is(err, inventory.ErrIdempotencyMismatch) || done == tc.mismatch {
				t.Fatalf("done=%v err=%v, want mismatch %v", done, err, tc.mismatch)
			}
		})
	}
}

// TestLongCodesAreCutInErrors: an answer's code or record status is cut
// in the error, however long it came: the error is logged at every
// attempt of a job (a proxy's page in JSON, under the 64 KiB read, would
// otherwise be logged whole each time).
func TestLongCodesAreCutInErrors(t *testing.T) {
	long := strings.Repeat("x", 30<<10) // code and status under the 64 KiB read
	for _, status := range []int{http.StatusBadRequest, http.StatusServiceUnavailable, http.StatusOK} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			_, _ = w.Write([]byte(`{"code":"` + long + `","status":"` + long + `"}`))
		}))
		c := inventory.New(inventory.Config{BaseURL: srv.URL, Timeout: 5 * time.Second})
		cf := inventory.Confirmation{Key: "k1", OutTradeNo: "T1", AmountTotal: 100}
		werr := c.Confirm(context.Background(), cf)
		_, qerr := c.ConfirmationDone(context.Background(), cf)
		srv.Close()
		for what, err := range map[string]error{"write": werr, "query": qerr} {
			if err == nil || len(err.Error()) > 1024 {
				t.Errorf("status %d, %s: err of %d bytes, want an error of at most 1024", status, what, len(fmt.Sprint(err)))
			}
		}
	}
}
