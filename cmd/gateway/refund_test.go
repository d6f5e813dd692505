package main

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"paygateway/gateway"
	"paygateway/gateway/wechatpay/wxpaysim"
	"paygateway/ledger"
)

func TestRefundLifecycle(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			e := startRefundEnv(t, b, nil)
			no := e.pay(t, "o-alice", 1000)
			tok := token(t, "o-alice")
			a := e.refund(t, tok, "k1", refundBody(no, 300))
			if a.status != 201 {
				t.Fatalf("refund: status=%d body=%s", a.status, a.body)
			}
			got := a.json(t)
			rno, _ := got["out_refund_no"].(string)
			if got["state"] != "PROCESSING" || rno == "" || e.sim.RefundCount(rno) != 1 {
				t.Fatalf("refund answer %s; sim count %d", a.body, e.sim.RefundCount(rno))
			}
			again := e.refund(t, tok, "k1", refundBody(no, 300))
			if again.status != 201 || !bytes.Equal(again.body, a.body) {
				t.Fatalf("replay: status=%d body=%s, want the stored answer", again.status, again.body)
			}
			if g := e.getRefund(t, tok, rno); g.status != 200 || g.json(t)["out_refund_no"] != rno {
				t.Fatalf("get own refund: %d %s", g.status, g.body)
			}
			unknown := e.getRefund(t, token(t, "o-bob"), "RF20260101000000ffffffffffffffff")
			if g := e.getRefund(t, token(t, "o-bob"), rno); g.status != 404 || unknown.status != 404 || !bytes.Equal(g.body, unknown.body) {
				t.Fatalf("get other's refund: %d %s; want 404 like an unknown one (%d %s)", g.status, g.body, unknown.status, unknown.body)
			}
			for _, bad := range []string{"%FF%00abc", "RF%0A1", strings.Repeat("R", 65)} {
				if g := e.getRefund(t, tok, bad); g.status != 400 || g.json(t)["code"] != "EINVALID" {
					t.Fatalf("get refund %q: %d %s, want 400 EINVALID", bad, g.status, g.body)
				}
			}
			status, body := apiCall(t, "GET", e.m.URL()+"/v1/ledger/payments/"+no, financeKey, nil)
			refunds, _ := body["refunds"].([]any)
			p, _ := body["payment"].(map[string]any)
			if status != 200 || len(refunds) != 1 || p["refunded_total"] != float64(300) {
				t.Fatalf("finance view: %d %v", status, body)
			}
			assertAcceptedAt(t, e.sim, refunds[0].(map[string]any))
			checkRefundMetrics(t, e.m.URL(), map[string]float64{
				`gateway_refund_transitions_total{state="CREATED"}`:    1,
				`gateway_refund_transitions_total{state="PROCESSING"}`: 1,
				`gateway_refund_transitions_total{state="SUCCESS"}`:    0,
				`gateway_refunds{state="PROCESSING"}`:                  1,
			})
		})
	}
}

// assertAcceptedAt wants the ledger's refund accepted when WeChat Pay
// says it created it (to the second, as WeChat states times).
func assertAcceptedAt(t *testing.T, sim *wxpaysim.Sim, refund map[string]any) {
	t.Helper()
	for _, r := range sim.Refunds() {
		if r.OutRefundNo != refund["out_refund_no"] {
			continue
		}
		got, _ := refund["accepted_at"].(string)
		if at, err := time.Parse(time.RFC3339Nano, got); err != nil || !at.Equal(r.CreateTime.Truncate(time.Second)) {
			t.Fatalf("accepted_at = %q, want WeChat's create_time %v", got, r.CreateTime)
		}
		return
	}
	t.Fatalf("WeChat Pay has no refund %v", refund["out_refund_no"])
}

// checkRefundMetrics wants each series at its value (the replay moved
// nothing; the gauge counts open refunds only).
func checkRefundMetrics(t *testing.T, base string, want map[string]float64) {
	t.Helper()
	for series, v := range want {
		if got := scrape(t, base, series); got != v {
			t.Errorf("%s = %v, want %v", series, got, v)
		}
	}
}

// TestRefundSameKeyConcurrent fires 100 identical requests at once: one
// refund reaches WeChat Pay, every answer is the stored one or 409 (with
// a Retry-After saying when asking again may get the answer).
func TestRefundSameKeyConcurrent(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			e := startRefundEnv(t, b, nil)
			no := e.pay(t, "o-carol", 500)
			tok := token(t, "o-carol")
			answers := fireRefunds(t, e, 100, func(int) (string, string, any) { return tok, "same-key", refundBody(no, 200) })
			var first *answer
			inFlight := 0
			for i := range answers {
				a := answers[i]
				switch {
				case a.status == 409 && a.json(t)["code"] == gateway.CodeInFlight:
					inFlight++
					if ra := a.header.Get("Retry-After"); ra == "" || ra == "0" {
						t.Errorf("answer %d: 409 EIN_FLIGHT with Retry-After %q, want when to ask again", i, ra)
					}
				case first == nil:
					first = &a
				case a.status != first.status || !bytes.Equal(a.body, first.body):
					t.Errorf("answer %d: %d %s differs from %d %s", i, a.status, a.body, first.status, first.body)
				}
			}
			if first == nil || first.status != 201 {
				t.Fatalf("no stored answer (%d in flight)", inFlight)
			}
			rno, _ := first.json(t)["out_refund_no"].(string)
			refunds, _ := refundRows(t, e.m, no)
			if n := e.sim.RefundCount(rno); n != 1 || refunds != 1 || len(e.sim.Refunds()) != 1 {
				t.Fatalf("sim executed %d (%d refunds), ledger has %d refunds; want 1, 1, 1", n, len(e.sim.Refunds()), refunds)
			}
		})
	}
}

// TestRefundManyKeysNeverExceedPaid fires 50 refunds of 7 fen with
// different keys at an order of 100 fen.
func TestRefundManyKeysNeverExceedPaid(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			e := startRefundEnv(t, b, nil)
			no := e.pay(t, "o-dave", 100)
			checkManyKeys(t, e, no, token(t, "o-dave"))
		})
	}
}

// checkManyKeys returns the slowest request's time.
func checkManyKeys(t *testing.T, e *refundEnv, no, tok string) time.Duration {
	t.Helper()
	answers, took := fireRefundsTimed(t, e, 50, func(i int) (string, string, any) {
		return tok, fmt.Sprintf("key-%d", i), refundBody(no, 7)
	})
	accepted := 0
	for i, a := range answers {
		switch {
		case a.status == 201:
			accepted++
		case a.status == 409 && a.json(t)["code"] == gateway.CodeConflict:
		default:
			t.Errorf("request %d: %d %s", i, a.status, a.body)
		}
	}
	p, err := e.m.Store.Payment(context.Background(), no)
	if err != nil {
		t.Fatal(err)
	}
	o, _ := e.sim.Order(no)
	if accepted != 14 || p.RefundedTotal != 98 || o.Refunded != 98 {
		t.Fatalf("accepted %d, ledger refunded %d, WeChat refunded %d; want 14, 98, 98", accepted, p.RefundedTotal, o.Refunded)
	}
	return slices.Max(took)
}

func fireRefunds(t *testing.T, e *refundEnv, n int, req func(i int) (tok, key string, body any)) []answer {
	t.Helper()
	out, _ := fireRefundsTimed(t, e, n, req)
	return out
}

// fireRefundsTimed sends n refund requests at once and returns their
// answers and how long each took.
func fireRefundsTimed(t *testing.T, e *refundEnv, n int, req func(i int) (tok, key string, body any)) ([]answer, []time.Duration) {
	t.Helper()
	out, took := make([]answer, n), make([]time.Duration, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tok, key, body := req(i)
			<-start
			began := time.Now()
			out[i] = e.refund(t, tok, key, body)
			took[i] = time.Since(began)
		}()
	}
	close(start)
	wg.Wait()
	return out, took
}

// TestRefundAmbiguousAnswers: WeChat Pay applies the refund but the answer
// is lost, or fails with a 5xx without applying it. The gateway queries
// before any new attempt and never creates a second refund. The request
// records what the query finds; "not found" right after the call is no
// proof (WeChat's queries lag its applications), so the request answers
// 202 and the janitor sends again after the safety buffer. A 429
// FREQUENCY_LIMITED is no verdict either: it is settled the same way.
func TestRefundAmbiguousAnswers(t *testing.T) {
	cases := []struct {
		name     string
		faults   wxpaysim.Faults
		requests int  // create calls WeChat Pay saw for the refund
		janitor  bool // the request answers 202 UNKNOWN; the janitor sends again
	}{
		{"applied then timeout", wxpaysim.Faults{ApplyThenTimeoutNext: 1, HoldFor: 2 * time.Second}, 1, false},
		{"5xx not applied", wxpaysim.Faults{Fail5xxNext: 1}, 1, true},
		{"connection dropped", wxpaysim.Faults{DropNext: 1}, 1, true},
		// Over the merchant's quota: WeChat Pay's signed 429 applied nothing.
		{"frequency limited", wxpaysim.Faults{FrequencyLimitedNext: 1}, 1, true},
	}
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			e := startRefundEnv(t, b, func(c *Config) { c.WechatPay.Timeout = time.Second }) // under HoldFor, over a loaded machine's healthy call
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					no := e.pay(t, "o-erin", 100)
					f := tc.faults
					f.PathPrefix = "/v3/refund/domestic/refunds"
					e.sim.SetFaults(f)
					a := e.refund(t, token(t, "o-erin"), "amb-"+no, refundBody(no, 100))
					got := a.json(t)
					rno, _ := got["out_refund_no"].(string)
					switch {
					case !tc.janitor && (a.status != 201 || got["state"] != "PROCESSING"):
						t.Fatalf("status=%d body=%s, want 201 PROCESSING", a.status, a.body)
					case tc.janitor && (a.status != 202 || got["state"] != "UNKNOWN" || e.sim.RefundCount(rno) != 0):
						t.Fatalf("status=%d body=%s, sim count %d; want 202 UNKNOWN, nothing sent again", a.status, a.body, e.sim.RefundCount(rno))
					case tc.janitor:
						pastSafetyBuffer(t, e.m, rno)
						e.m.Refunds.Sweep(context.Background(), 10)
					}
					recs := e.sim.Refunds()
					last := recs[len(recs)-1]
					if last.OutRefundNo != rno || last.Requests != tc.requests || e.sim.RefundCount(rno) != 1 {
						t.Fatalf("sim refund %+v; want one execution, %d requests", last, tc.requests)
					}
					if r := ledgerRefund(t, e.m, rno); r.State != ledger.RefundProcessing || r.RefundID == "" {
						t.Fatalf("ledger refund %+v", r)
					}
				})
			}
		})
	}
}

// TestRefundRedisUnavailable points the gateway's Redis at a dead port and
// at a listener that never answers: refunds stay correct and no request hangs.
func TestRefundRedisUnavailable(t *testing.T) {
	silent := hungRedis(t)
	dbs := []backend{{name: "sqlite"}, {name: "mysql", mysql: true}}
	for _, target := range []struct{ name, addr string }{{"dead port", "127.0.0.1:1"}, {"silent listener", silent}} {
		for _, b := range dbs {
			t.Run(b.name+"/"+target.name, func(t *testing.T) { checkWithoutRedis(t, b, target.addr) })
		}
	}
}

func checkWithoutRedis(t *testing.T, b backend, addr string) {
	e := startRefundEnv(t, b, func(c *Config) { c.Redis.Addr = addr })
	no := e.pay(t, "o-frank", 100)
	tok := token(t, "o-frank")
	start := time.Now()
	slowest := checkManyKeys(t, e, no, tok)
	// One key, ten times at once, for 1 fen of the 2 left: a second refund
	// under the key would fit, so only idempotency can stop it.
	dup, took := fireRefundsTimed(t, e, 10, func(int) (string, string, any) { return tok, "dup", refundBody(no, 1) })
	slowest = max(slowest, slices.Max(took))
	named := map[any]bool{}
	for i, a := range dup {
		switch {
		case a.status == 201:
			named[a.json(t)["out_refund_no"]] = true
		case a.status == 409 && a.json(t)["code"] == "EIN_FLIGHT":
		default:
			t.Errorf("duplicate %d: %d %s", i, a.status, a.body)
		}
	}
	if refunds, _ := refundRows(t, e.m, no); refunds != 15 || len(named) != 1 {
		t.Fatalf("%d refunds, the key's answers named %v; want 15 and one", refunds, named)
	}
	if o, _ := e.sim.Order(no); o.Refunded != 99 {
		t.Fatalf("WeChat refunded %d fen, want 99", o.Refunded)
	}
	t.Logf("took %v with Redis at %s, slowest request %v", time.Since(start), addr, slowest)
	// The default Redis timeouts (testConfig keeps them: 200 ms dial, 100 ms
	// read/write, 250 ms a call) and the 2 s breaker cost a request well
	// under a second; 50 requests on one order queue for its in-process lock,
	// about 1 s here under -race. A request waiting on a silent Redis would
	// take the client's whole 15 s.
	if bound := 8 * time.Second; slowest > bound { // room for a loaded CI machine, well under a silent Redis's 15 s
		t.Errorf("slowest request took %v with Redis at %s, want under %v", slowest, addr, bound)
	}
}

func TestRefundRefusals(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			e := startRefundEnv(t, b, nil)
			no := e.pay(t, "o-gina", 100)
			unpaid := uniqueNo("unp")
			if s, body := apiCall(t, "POST", e.m.URL()+"/v1/orders", serviceKey, map[string]any{"out_trade_no": unpaid,
				"amount_total": 100, "payer_openid": "o-gina", "expire_at": time.Now().Add(time.Hour)}); s != 201 {
				t.Fatalf("register: %d %v", s, body)
			}
			tok := token(t, "o-gina")
			forged, _ := gateway.SignDevToken([]byte("another-secret-another-secret-xx"), "o-gina", "", "", time.Hour)
			expired, _ := gateway.SignDevToken([]byte(jwtSecret), "o-gina", "", jwtAudience, -time.Minute)
			cases := []struct {
				name, tok, key string
				body           any
				status         int
				code           string
			}{
				{"no token", "", "k", refundBody(no, 10), 401, gateway.CodeUnauthorized},
				{"forged token", forged, "k", refundBody(no, 10), 401, gateway.CodeUnauthorized},
				{"expired token", expired, "k", refundBody(no, 10), 401, gateway.CodeUnauthorized},
				{"garbage token", "abc.def.ghi", "k", refundBody(no, 10), 401, gateway.CodeUnauthorized},
				{"other user", token(t, "o-mallory"), "k", refundBody(no, 10), 404, gateway.CodeNotFound},
				{"unknown order", tok, "k", refundBody("nosuchorder1", 10), 404, gateway.CodeNotFound},
				{"unpaid order", tok, "k", refundBody(unpaid, 10), 409, gateway.CodeConflict},
				{"zero amount", tok, "k", refundBody(no, 0), 400, gateway.CodeInvalid},
				{"negative amount", tok, "k", refundBody(no, -5), 400, gateway.CodeInvalid},
				{"over paid amount", tok, "k", refundBody(no, 101), 409, gateway.CodeConflict},
				{"missing key", tok, "", refundBody(no, 10), 400, gateway.CodeInvalid},
				{"malformed JSON", tok, "k", `{"out_trade_no":`, 400, gateway.CodeInvalid},
				{"unknown field", tok, "k", `{"out_trade_no":"` + no + `","amount":1,"x":1}`, 400, gateway.CodeInvalid},
				// 27 characters but 81 bytes: WeChat Pay counts bytes.
				{"reason over 80 bytes", tok, "k", `{"out_trade_no":"` + no + `","amount":1,"reason":"` + strings.Repeat("退", 27) + `"}`,
					400, gateway.CodeInvalid},
				// Shown to the payer in WeChat's refund message: no control characters.
				{"reason with a control character", tok, "k", `{"out_trade_no":"` + no + `","amount":1,"reason":"a\u0000b"}`,
					400, gateway.CodeInvalid},
				{"reason with a line break", tok, "k", `{"out_trade_no":"` + no + `","amount":1,"reason":"a\nb"}`,
					400, gateway.CodeInvalid},
				{"reason with a line separator", tok, "k", `{"out_trade_no":"` + no + `","amount":1,"reason":"a\u2028b"}`,
					400, gateway.CodeInvalid},
				// A bidi override: the payer would read the text after it reversed.
				{"reason with a bidi override", tok, "k", `{"out_trade_no":"` + no + `","amount":1,"reason":"退款 \u202e001 元"}`,
					400, gateway.CodeInvalid},
				{"reason with a bidi isolate", tok, "k", `{"out_trade_no":"` + no + `","amount":1,"reason":"a\u2066b\u2069"}`,
					400, gateway.CodeInvalid},
			}
			// Someone else's order is answered as an unknown one, word for
			// word: order numbers cannot be probed.
			if mine, theirs := e.refund(t, tok, "k", refundBody("nosuchorder1", 10)), e.refund(t, token(t, "o-mallory"), "k", refundBody(no, 10)); !bytes.Equal(mine.body, theirs.body) {
				t.Fatalf("unknown order answered %s, someone else's %s; want the same", mine.body, theirs.body)
			}
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					a := e.refund(t, tc.tok, tc.key, tc.body)
					if a.status != tc.status || a.json(t)["code"] != tc.code {
						t.Fatalf("status=%d body=%s, want %d %s", a.status, a.body, tc.status, tc.code)
					}
					for _, order := range []string{no, unpaid} {
						if refunds, keys := refundRows(t, e.m, order); refunds != 0 || keys != 0 {
							t.Fatalf("%s: %d refunds, %d keys recorded, want none", order, refunds, keys)
						}
					}
				})
			}
			// Two keys: a proxy keeping the last would see another than the first.
			twice, _ := http.NewRequest("POST", e.m.URL()+"/v1/refunds", strings.NewReader(`{"out_trade_no":"`+no+`","amount":1}`))
			twice.Header.Set("Content-Type", "application/json")
			twice.Header.Set("Authorization", "Bearer "+tok)
			twice.Header.Add("Idempotency-Key", "k1")
			twice.Header.Add("Idempotency-Key", "k2")
			if a := do(t, twice); a.status != 400 || a.json(t)["code"] != gateway.CodeInvalid {
				t.Fatalf("two Idempotency-Key headers: %d %s, want 400 EINVALID", a.status, a.body)
			}
			if refunds, keys := refundRows(t, e.m, no); refunds != 0 || keys != 0 {
				t.Fatalf("two Idempotency-Key headers: %d refunds, %d keys recorded, want none", refunds, keys)
			}
			if a := e.refund(t, tok, "reused", refundBody(no, 10)); a.status != 201 {
				t.Fatalf("first use: %d %s", a.status, a.body)
			}
			a := e.refund(t, tok, "reused", refundBody(no, 11))
			if a.status != 422 || a.json(t)["code"] != gateway.CodeKeyReused {
				t.Fatalf("reused key: %d %s", a.status, a.body)
			}
			if refunds, keys := refundRows(t, e.m, no); refunds != 1 || keys != 1 || len(e.sim.Refunds()) != 1 {
				t.Fatalf("%d refunds, %d keys, %d at WeChat; want 1, 1, 1", refunds, keys, len(e.sim.Refunds()))
			}
		})
	}
}

func TestRefundNotifications(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			e := startRefundEnv(t, b, nil)
			no := e.pay(t, "o-hank", 100)
			tok := token(t, "o-hank")
			create := func(key string, amount int64) *ledger.Refund {
				a := e.refund(t, tok, key, refundBody(no, amount))
				if a.status != 201 {
					t.Fatalf("refund: %d %s", a.status, a.body)
				}
				rno, _ := a.json(t)["out_refund_no"].(string)
				return ledgerRefund(t, e.m, rno)
			}
			ok, closed, abn := create("n1", 30), create("n2", 30), create("n3", 30)
			steps := []struct {
				r      *ledger.Refund
				status string
				want   ledger.RefundState
			}{
				{ok, "SUCCESS", ledger.RefundSuccess},
				{ok, "SUCCESS", ledger.RefundSuccess},  // duplicate (new id, same news)
				{ok, "ABNORMAL", ledger.RefundSuccess}, // late: must not move back
				{ok, "CLOSED", ledger.RefundSuccess},
				{closed, "CLOSED", ledger.RefundClosed},
				{abn, "ABNORMAL", ledger.RefundAbnormal},
				{abn, "SUCCESS", ledger.RefundSuccess},
			}
			for i, st := range steps {
				code, n := e.refundNotice(t, st.r, st.status)
				if code != 204 {
					t.Fatalf("step %d: status=%d", i, code)
				}
				if i == 0 { // the very same notification again
					again := mustNotification(n.Resign(e.k, wxpaysim.PublicKeyMode(), time.Now()))
					if code, _ := post(t, e.m.URL()+refundNotifyPath, again); code != 204 {
						t.Fatalf("redelivery: status=%d", code)
					}
				}
				if got := ledgerRefund(t, e.m, st.r.OutRefundNo).State; got != st.want {
					t.Fatalf("step %d: %s after %s, want %s", i, got, st.status, st.want)
				}
			}
			p, _ := e.m.Store.Payment(context.Background(), no)
			if p.RefundedTotal != 60 {
				t.Fatalf("refunded_total = %d, want 60 (CLOSED gives back)", p.RefundedTotal)
			}
			notices, _ := e.m.Store.Notices(context.Background(), no)
			if len(notices) != 1+len(steps) {
				t.Fatalf("%d notices stored, want %d", len(notices), 1+len(steps))
			}
			// The ledger allows 40 more, but the simulator never closed that
			// refund, so WeChat Pay refuses (INVALID_REQUEST, more than is left): FAILED, money back.
			a := e.refund(t, tok, "n4", refundBody(no, 40))
			if a.status != 422 || a.json(t)["code"] != gateway.CodeUnprocessable {
				t.Fatalf("refused refund: %d %s", a.status, a.body)
			}
			if p, _ := e.m.Store.Payment(context.Background(), no); p.RefundedTotal != 60 {
				t.Fatalf("refunded_total = %d after a refused refund, want 60", p.RefundedTotal)
			}
			if again := e.refund(t, tok, "n4", refundBody(no, 40)); again.status != 422 || !bytes.Equal(again.body, a.body) {
				t.Fatalf("replay of the refusal: %d %s", again.status, again.body)
			}
		})
	}
}

// TestRefundJanitor leaves refunds UNKNOWN (create and query both lost)
// and PROCESSING, then lets the janitor settle them from WeChat's answer.
func TestRefundJanitor(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			e := startRefundEnv(t, b, func(c *Config) {
				// Under HoldFor, over a loaded machine's healthy call: the
				// processing case and every janitor query need WeChat Pay's
				// answer in time (300 ms was too short under the race-enabled suite).
				c.WechatPay.Timeout = time.Second
				c.Refunds.Recheck = time.Millisecond
			})
			tok := token(t, "o-ivy")
			prefix := "/v3/refund/domestic/refunds"
			cases := []struct {
				name   string
				faults wxpaysim.Faults
				before ledger.RefundState
			}{
				{"applied, answers lost", wxpaysim.Faults{PathPrefix: prefix, ApplyThenTimeoutNext: 2, HoldFor: 2 * time.Second}, ledger.RefundUnknown},
				{"never applied", wxpaysim.Faults{PathPrefix: prefix, Fail5xxNext: 2}, ledger.RefundUnknown},
				{"processing", wxpaysim.Faults{}, ledger.RefundProcessing},
			}
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					no := e.pay(t, "o-ivy", 100)
					e.sim.SetFaults(tc.faults)
					a := e.refund(t, tok, "j-"+no, refundBody(no, 100))
					rno, _ := a.json(t)["out_refund_no"].(string)
					if r := ledgerRefund(t, e.m, rno); r.State != tc.before {
						t.Fatalf("before the janitor: %s (answer %d %s), want %s", r.State, a.status, a.body, tc.before)
					}
					pastSafetyBuffer(t, e.m, rno)
					e.m.Refunds.Sweep(context.Background(), 10)
					e.sim.SettleRefunds()
					time.Sleep(5 * time.Millisecond)
					e.m.Refunds.Sweep(context.Background(), 10)
					r := ledgerRefund(t, e.m, rno)
					if r.State != ledger.RefundSuccess || e.sim.RefundCount(rno) != 1 {
						t.Fatalf("after the janitor: %+v, sim count %d", r, e.sim.RefundCount(rno))
					}
				})
			}
		})
	}
}

// pastSafetyBuffer moves a refund's next check into the past, as if its
// safety buffer had run out.
func pastSafetyBuffer(t *testing.T, m *Main, outRefundNo string) {
	t.Helper()
	err := m.Store.DB().Exec("UPDATE refunds SET next_check_at = ? WHERE out_refund_no = ?",
		time.Now().UTC().Add(-time.Second), outRefundNo).Error
	if err != nil {
		t.Fatal(err)
	}
}

// TestIdempotencyKeysArePrintableASCII: a key with bytes outside printable
// ASCII is refused 400 and stores nothing; before, MySQL refused to store
// it and the client was told 503, "try again", forever.
func TestIdempotencyKeysArePrintableASCII(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			e := startRefundEnv(t, b, nil)
			no := e.pay(t, "o-ascii", 100)
			tok := token(t, "o-ascii")
			for _, key := range []string{"k\xff\xfe", "k with space", "é-key"} {
				if a := e.refund(t, tok, key, refundBody(no, 10)); a.status != 400 || !bytes.Contains(a.body, []byte("EINVALID")) {
					t.Fatalf("key %q: %d %s, want 400 EINVALID", key, a.status, a.body)
				}
			}
			var keys int64
			if err := e.m.Store.DB().Table("idempotency_keys").Count(&keys).Error; err != nil || keys != 0 {
				t.Fatalf("%d idempotency keys stored (%v), want none", keys, err)
			}
		})
	}
}

// TestRefundOfAnOrderWeChatDoesNotKnowYet: WeChat Pay's refund service
// has been seen to answer "order not found" (404 RESOURCE_NOT_EXISTS) for
// an order paid minutes before. The application is not refused at once:
// it stays UNKNOWN (202) and the janitor sends it again with the same
// out_refund_no, so it is paid once when WeChat Pay knows the order; only
// once the refund is orderUnknownFor old is such an answer a refusal: it
// is FAILED and its amount given back.
func TestRefundOfAnOrderWeChatDoesNotKnowYet(t *testing.T) {
	e := startRefundEnv(t, backends[1], nil)
	tok := token(t, "o-lag")
	prefix := "/v3/refund/domestic/refunds"
	sweep := func(rno string) {
		pastSafetyBuffer(t, e.m, rno)
		e.m.Refunds.Sweep(context.Background(), 10)
	}

	no := e.pay(t, "o-lag", 100)
	e.sim.SetFaults(wxpaysim.Faults{PathPrefix: prefix, OrderUnknownNext: 2}) // the request's send and the janitor's first
	a := e.refund(t, tok, "lag-"+no, refundBody(no, 60))
	rno, _ := a.json(t)["out_refund_no"].(string)
	if r := ledgerRefund(t, e.m, rno); a.status != 202 || r.State != ledger.RefundUnknown || r.Attempts != 1 {
		t.Fatalf("answer %d %s, ledger %+v; want 202 and UNKNOWN after one attempt (the request never sends twice)", a.status, a.body, r)
	}
	sweep(rno)
	if r := ledgerRefund(t, e.m, rno); r.State != ledger.RefundUnknown || r.Attempts != 2 {
		t.Fatalf("after the janitor's first send: %+v; want UNKNOWN after 2 attempts", r)
	}
	sweep(rno)
	if r := ledgerRefund(t, e.m, rno); r.State != ledger.RefundProcessing || r.Attempts != 3 || e.sim.RefundCount(rno) != 1 {
		t.Fatalf("after the janitor: %+v, sim count %d; want PROCESSING after 3 attempts, paid once", r, e.sim.RefundCount(rno))
	}
	// The client, told 202, asks again with its key to learn the outcome.
	if again := e.refund(t, tok, "lag-"+no, refundBody(no, 60)); again.status != 201 || again.json(t)["state"] != "PROCESSING" {
		t.Fatalf("replay of the 202 after WeChat Pay accepted: %d %s, want 201 PROCESSING", again.status, again.body)
	}

	other := e.pay(t, "o-lag", 100)
	e.sim.SetFaults(wxpaysim.Faults{PathPrefix: prefix, OrderUnknownNext: 100})
	b := e.refund(t, tok, "lag-"+other, refundBody(other, 60))
	bno, _ := b.json(t)["out_refund_no"].(string)
	sweep(bno)
	if r := ledgerRefund(t, e.m, bno); r.State != ledger.RefundUnknown {
		t.Fatalf("a young refund answered 'order not found': %+v; want UNKNOWN, asked again later", r)
	}
	if err := e.m.Store.DB().Exec("UPDATE refunds SET created_at = ? WHERE out_refund_no = ?",
		time.Now().UTC().Add(-11*time.Minute), bno).Error; err != nil {
		t.Fatal(err)
	}
	sweep(bno)
	if r := ledgerRefund(t, e.m, bno); r.State != ledger.RefundFailed || r.Attempts != 3 || e.sim.RefundCount(bno) != 0 {
		t.Fatalf("an 11-minute-old refund answered 'order not found': %+v; want FAILED (3rd attempt: the request sent once, the janitor twice), never paid", r)
	}
	if p, _ := e.m.Store.Payment(context.Background(), other); p.RefundedTotal != 0 {
		t.Fatalf("refunded_total = %d, want the amount given back", p.RefundedTotal)
	}
	if again := e.refund(t, tok, "lag-"+other, refundBody(other, 60)); again.status != 422 {
		t.Fatalf("replay of the 202 after the refund failed: %d %s, want 422", again.status, again.body)
	}
}

// TestRefundKeyFreedAfterTheBudgetRanOut: a refund request whose ledger
// write outlasted refunds.call_timeout (a held row lock) made nothing, so
// its Idempotency-Key is given back even though the budget it ran on is
// spent: the client's retry with that key is served at once, not refused
// 409 EIN_FLIGHT for refunds.in_flight.
func TestRefundKeyFreedAfterTheBudgetRanOut(t *testing.T) {
	e := startRefundEnv(t, backend{name: "mysql", mysql: true}, func(c *Config) {
		c.Refunds.CallTimeout = time.Second
		c.Database.LockWaitTimeout = 5 * time.Second
	})
	tok := token(t, "o-slow")
	no := e.pay(t, "o-slow", 1000)
	other, err := sql.Open("mysql", strings.TrimPrefix(e.m.Config.Database.DSN, "mysql://"))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	holder, err := other.BeginTx(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Rollback()
	if _, err := holder.Exec("SELECT id FROM payments WHERE out_trade_no = ? FOR UPDATE", no); err != nil {
		t.Fatal(err)
	}
	if a := e.refund(t, tok, "slow-1", refundBody(no, 100)); a.status < 500 {
		t.Fatalf("refund behind a held row lock: %d %s, want a 5xx", a.status, a.body)
	}
	if err := holder.Rollback(); err != nil {
		t.Fatal(err)
	}
	a := e.refund(t, tok, "slow-1", refundBody(no, 100))
	if a.status != 201 {
		t.Fatalf("retry with the same key: %d %s, want 201", a.status, a.body)
	}
	if n := e.sim.RefundCount(a.json(t)["out_refund_no"].(string)); n != 1 {
		t.Fatalf("WeChat Pay got %d applications, want 1", n)
	}
}
