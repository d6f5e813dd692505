package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gin-gonic/gin"

	"paygateway/ledger"
	"paygateway/ledger/ledgertest"
)

// paidBy records order no as paid 100 fen by openid.
func paidBy(t *testing.T, s *ledger.Store, no, openid string) {
	t.Helper()
	u := ledger.TransactionUpdate{Notice: ledger.Notice{NotifyID: "n-" + no, Source: ledger.SourceCallback,
		EventType: "TRANSACTION.SUCCESS", OutTradeNo: no, TransactionID: "tx-" + no},
		OutTradeNo: no, TransactionID: "tx-" + no, TradeState: "SUCCESS", PayerOpenID: openid,
		AmountTotal: 100, PayerTotal: 100, Currency: "CNY"}
	if _, err := s.ApplyTransaction(context.Background(), u); err != nil {
		t.Fatalf("pay %s: %v", no, err)
	}
}

// slowRefunds accepts every refund after a delay.
type slowRefunds struct{ delay time.Duration }

func (s slowRefunds) CreateRefund(_ context.Context, req WxRefundRequest) (*WxRefund, error) {
	time.Sleep(s.delay)
	return &WxRefund{OutRefundNo: req.OutRefundNo, RefundID: "wx-" + req.OutRefundNo, Status: "PROCESSING", Amount: req.Amount}, nil
}

func (s slowRefunds) QueryRefund(context.Context, string) (*WxRefund, error) {
	return nil, ErrOutcomeUnknown
}

// TestSlowRefundAnswerOutlivesWriteTimeout: WeChat Pay takes longer than
// the server's write timeout to accept a refund; the client still gets
// its 201, not a closed connection (after which it might retry with a
// new key and refund twice).
func TestSlowRefundAnswerOutlivesWriteTimeout(t *testing.T) {
	gin.SetMode(gin.TestMode)
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		paidBy(t, s, "slow-1", "o-slow")
		svc := NewRefundService(RefundConfig{CallTimeout: 3 * time.Second}, s, slowRefunds{delay: 1500 * time.Millisecond}, NewMemoryLocker())
		d := &Deps{APITimeout: 500 * time.Millisecond, MaxBodyBytes: 1 << 16}
		r := gin.New()
		r.POST("/v1/refunds", func(c *gin.Context) { c.Set(openIDKey, "o-slow"); createRefund(c, d, svc) })
		srv := httptest.NewUnstartedServer(r)
		srv.Config.WriteTimeout = time.Second
		srv.Start()
		defer srv.Close()
		req, _ := http.NewRequest("POST", srv.URL+"/v1/refunds", strings.NewReader(`{"out_trade_no":"slow-1","amount":40}`))
		req.Header.Set("Idempotency-Key", "k-slow")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("refund answer lost: %v", err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusCreated || !strings.Contains(string(body), `"state":"PROCESSING"`) {
			t.Fatalf("answer %d %s, want 201 PROCESSING", resp.StatusCode, body)
		}
	})
}

// lastMomentRefunds accepts every refund just as the caller's time runs out.
type lastMomentRefunds struct{}

func (lastMomentRefunds) CreateRefund(ctx context.Context, req WxRefundRequest) (*WxRefund, error) {
	<-ctx.Done()
	return &WxRefund{OutRefundNo: req.OutRefundNo, RefundID: "wx-" + req.OutRefundNo, Status: "PROCESSING", Amount: req.Amount}, nil
}

func (lastMomentRefunds) QueryRefund(context.Context, string) (*WxRefund, error) {
	return nil, ErrOutcomeUnknown
}

// TestAnswerAtTheEndOfTheCallBudgetIsRecorded: WeChat Pay's answer that
// comes as the request's call_timeout runs out is still recorded, and the
// request's answer stored under its key: the ledger writes have a bound of
// their own, not what is left of WeChat's. (The budget, 1 s, also covers
// the checks and the reservation before the call: 200 ms was too little
// for them under the race-enabled suite on a loaded machine.)
func TestAnswerAtTheEndOfTheCallBudgetIsRecorded(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		paidBy(t, s, "late-1", "o-late")
		svc := NewRefundService(RefundConfig{CallTimeout: time.Second}, s, lastMomentRefunds{}, NewMemoryLocker())
		p := RefundParams{OutTradeNo: "late-1", Amount: 40}
		a, err := svc.Create(ctx, "o-late", "k-late", p)
		if err != nil || a.Status != http.StatusCreated || !strings.Contains(string(a.Body), `"state":"PROCESSING"`) {
			t.Fatalf("answer %+v, %v; want 201 PROCESSING", a, err)
		}
		again, err := svc.Create(ctx, "o-late", "k-late", p)
		if err != nil || !again.Replayed || again.Status != http.StatusCreated {
			t.Fatalf("retry with the key: %+v, %v; want the stored 201", again, err)
		}
	})
}

// TestSweepPrunesEveryExpiredKey: one sweep deletes all the expired
// idempotency keys, batch after batch (more than one batch here), and
// leaves the live ones.
func TestSweepPrunesEveryExpiredKey(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		db, past, future := s.DB(), s.Now().Add(-time.Hour), s.Now().Add(time.Hour)
		rows := make([]map[string]any, 0, 2*pruneBatch+10)
		for i := range cap(rows) {
			expires := past
			if i%100 == 0 {
				expires = future
			}
			rows = append(rows, map[string]any{"scope": "o-prune", "idem_key": fmt.Sprintf("k-%d", i), "request_hash": "h",
				"state": "DONE", "created_at": past, "expires_at": expires})
		}
		if err := db.Table("idempotency_keys").CreateInBatches(rows, 200).Error; err != nil {
			t.Fatal(err)
		}
		svc := NewRefundService(RefundConfig{CallTimeout: 10 * time.Second}, s, slowRefunds{}, NewMemoryLocker())
		svc.Sweep(context.Background(), 10)
		var left, live int64
		db.Table("idempotency_keys").Count(&left)
		db.Table("idempotency_keys").Where("expires_at > ?", s.Now()).Count(&live)
		if left != live || live != int64(cap(rows)/100+1) {
			t.Fatalf("after one sweep: %d keys left, %d live; want only the %d live ones", left, live, cap(rows)/100+1)
		}
	})
}

// countedRefunds accepts every refund and counts the applications.
type countedRefunds struct{ n atomic.Int64 }

func (c *countedRefunds) CreateRefund(_ context.Context, req WxRefundRequest) (*WxRefund, error) {
	c.n.Add(1)
	return &WxRefund{OutRefundNo: req.OutRefundNo, RefundID: "wx-" + req.OutRefundNo, Status: "PROCESSING", Amount: req.Amount}, nil
}

func (c *countedRefunds) QueryRefund(context.Context, string) (*WxRefund, error) {
	return nil, ErrOutcomeUnknown
}

// TestRetryAfterKeyTTLGetsTheSameRefund: a client retries a refund with
// its Idempotency-Key after key_ttl has passed and the janitor has swept:
// it is answered with the refund it made, and WeChat Pay gets one
// application, not two (before, the key was pruned and the retry paid
// the refund again).
func TestRetryAfterKeyTTLGetsTheSameRefund(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		paidBy(t, s, "ttl-001", "o-ttl")
		wx := &countedRefunds{}
		svc := NewRefundService(RefundConfig{CallTimeout: 3 * time.Second}, s, wx, NewMemoryLocker())
		p := RefundParams{OutTradeNo: "ttl-001", Amount: 30}
		first, err := svc.Create(ctx, "o-ttl", "k-ttl", p)
		if err != nil || first.Status != http.StatusCreated {
			t.Fatalf("first: %+v, %v", first, err)
		}
		if err := s.DB().Table("idempotency_keys").Where("1 = 1").Update("expires_at", s.Now().Add(-time.Hour)).Error; err != nil {
			t.Fatal(err)
		}
		svc.Sweep(ctx, 10)
		again, err := svc.Create(ctx, "o-ttl", "k-ttl", p)
		if err != nil || !again.Replayed || string(again.Body) != string(first.Body) {
			t.Fatalf("retry after key_ttl: %v; want the first answer replayed", answerOrErr(again, err))
		}
		if _, err := svc.Create(ctx, "o-ttl", "k-ttl", RefundParams{OutTradeNo: "ttl-001", Amount: 31}); ErrorCode(err) != CodeKeyReused {
			t.Fatalf("other parameters after key_ttl: %v, want %s", err, CodeKeyReused)
		}
		if n := wx.n.Load(); n != 1 {
			t.Fatalf("WeChat Pay got %d refund applications, want 1", n)
		}
		if rs, err := s.Refunds(ctx, "ttl-001"); err != nil || len(rs) != 1 {
			t.Fatalf("ledger refunds: %d, %v; want 1", len(rs), err)
		}
	})
}

func answerOrErr(a *Answer, err error) string {
	if err != nil {
		return err.Error()
	}
	return fmt.Sprintf("%d replayed=%v %s", a.Status, a.Replayed, a.Body)
}

// TestRefundInAnotherMediaTypeLeavesNoTrace: POST /v1/refunds with a
// body labelled as a form or as text (alone, or after application/json),
// or as gzipped, is 415 before anything is recorded:
// no refund, no idempotency key, no history.
func TestRefundInAnotherMediaTypeLeavesNoTrace(t *testing.T) {
	gin.SetMode(gin.TestMode)
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		paidBy(t, s, "ctype-1", "o-ctype")
		svc := NewRefundService(RefundConfig{CallTimeout: 3 * time.Second}, s, &countedRefunds{}, NewMemoryLocker())
		d := &Deps{APITimeout: time.Second, MaxBodyBytes: 1 << 16}
		r := gin.New()
		r.POST("/v1/refunds", func(c *gin.Context) { c.Set(openIDKey, "o-ctype"); createRefund(c, d, svc) })
		var history int64
		s.DB().Table("state_history").Count(&history)
		for _, h := range []http.Header{{"Content-Type": {"text/plain"}}, {"Content-Type": {"application/x-www-form-urlencoded"}},
			{"Content-Type": {"application/json", "application/x-www-form-urlencoded"}}, // labelled twice: a proxy may keep the last
			{"Content-Type": {"application/json"}, "Content-Encoding": {"gzip"}}} {      // plain JSON labelled gzipped
			req := httptest.NewRequest("POST", "/v1/refunds", strings.NewReader(`{"out_trade_no":"ctype-1","amount":40}`))
			req.Header = h
			req.Header.Set("Idempotency-Key", "k-ctype")
			w := httptest.NewRecorder()
			r.ServeHTTP(w, req)
			if w.Code != http.StatusUnsupportedMediaType || !strings.Contains(w.Body.String(), `"code":"`+CodeUnsupportedType+`"`) {
				t.Errorf("%v: %d %s, want 415 %s", h, w.Code, w.Body, CodeUnsupportedType)
			}
		}
		var refunds, keys, after int64
		s.DB().Table("refunds").Count(&refunds)
		s.DB().Table("idempotency_keys").Count(&keys)
		s.DB().Table("state_history").Count(&after)
		if refunds != 0 || keys != 0 || after != history {
			t.Fatalf("%d refunds, %d keys, %d new history rows; want none", refunds, keys, after-history)
		}
	})
}

// TestRefundReasonNotUTF8LeavesNoTrace: a refund whose reason is not
// UTF-8 (here GBK, as a client that does not label its charset might
// send "尺码不对") is 400 before anything is recorded. Before, the JSON
// decoder turned each bad byte into U+FFFD and the refund went to WeChat
// Pay with "����" as its reason, shown to the payer in the refund message.
func TestRefundReasonNotUTF8LeavesNoTrace(t *testing.T) {
	gin.SetMode(gin.TestMode)
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		paidBy(t, s, "gbk-001", "o-gbk")
		wx := &countedRefunds{}
		svc := NewRefundService(RefundConfig{CallTimeout: 3 * time.Second}, s, wx, NewMemoryLocker())
		d := &Deps{APITimeout: time.Second, MaxBodyBytes: 1 << 16}
		r := gin.New()
		r.POST("/v1/refunds", func(c *gin.Context) { c.Set(openIDKey, "o-gbk"); createRefund(c, d, svc) })
		gbk := "\xb3\xdf\xc2\xeb\xb2\xbb\xb6\xd4" // 尺码不对 in GBK
		req := httptest.NewRequest("POST", "/v1/refunds", strings.NewReader(`{"out_trade_no":"gbk-001","amount":40,"reason":"`+gbk+`"}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Idempotency-Key", "k-gbk")
		w := httptest.NewRecorder()
		r.ServeHTTP(w, req)
		if w.Code != http.StatusBadRequest || !strings.Contains(w.Body.String(), `"code":"`+CodeInvalid+`"`) {
			t.Errorf("%d %s, want 400 %s", w.Code, w.Body, CodeInvalid)
		}
		var refunds, keys int64
		s.DB().Table("refunds").Count(&refunds)
		s.DB().Table("idempotency_keys").Count(&keys)
		if refunds != 0 || keys != 0 || wx.n.Load() != 0 {
			t.Fatalf("%d refunds, %d keys, %d sent to WeChat Pay; want none", refunds, keys, wx.n.Load())
		}
	})
}

// TestOpenAPIIdempotencyKeyIsTheOneAccepted: openapi.json's schema of the
// Idempotency-Key header accepts exactly the keys POST /v1/refunds does
// (1-128 printable ASCII characters). Before, it said only "at most 128",
// so a client built from it could send a key with a space or a Chinese
// character and meet a 400 the document did not announce.
func TestOpenAPIIdempotencyKeyIsTheOneAccepted(t *testing.T) {
	var doc struct {
		Paths map[string]map[string]struct {
			Parameters []struct {
				Name   string `json:"name"`
				Schema struct {
					MinLength int    `json:"minLength"`
					MaxLength int    `json:"maxLength"`
					Pattern   string `json:"pattern"`
				} `json:"schema"`
			} `json:"parameters"`
		} `json:"paths"`
	}
	if err := json.Unmarshal(OpenAPIDocument, &doc); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, p := range doc.Paths["/v1/refunds"]["post"].Parameters {
		if p.Name != "Idempotency-Key" {
			continue
		}
		found = true
		re, err := regexp.Compile(p.Schema.Pattern)
		if err != nil || p.Schema.Pattern == "" {
			t.Fatalf("pattern %q: %v", p.Schema.Pattern, err)
		}
		for _, k := range []string{"k", "demo-r1", strings.Repeat("k", 128), strings.Repeat("k", 129), "", "k k", "k\tk", "é-key",
			"退款-1", "k\x7f", "!~{}\"'", "550e8400-e29b-41d4-a716-446655440000"} {
			documented := re.MatchString(k) && len(k) >= p.Schema.MinLength && len(k) <= p.Schema.MaxLength
			if documented != validIdempotencyKey(k) {
				t.Errorf("key %q: openapi.json says %v, the handler %v", k, documented, validIdempotencyKey(k))
			}
		}
	}
	if !found {
		t.Fatal("POST /v1/refunds documents no Idempotency-Key header")
	}
}
