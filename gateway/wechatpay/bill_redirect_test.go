package wechatpay_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"paygateway/gateway/wechatpay"
	"paygateway/ledger/daytest"
)

// TestBillDownloadFollowsNoRedirect: a bill download that answers with a
// redirect (WeChat Pay's never does) fails as an unknown outcome, and
// nothing is sent where it points. Followed, the merchant-signed request
// went along, its Authorization header too (net/http keeps it for the same
// host name, whatever the scheme or port: https:// to http:// included),
// and the day's bill, every payer's openid and amount, came back from
// wherever the redirect said.
func TestBillDownloadFollowsNoRedirect(t *testing.T) {
	daytest.AwayFromMidnight(t, time.Minute)
	e := newClientEnv(t, nil)
	e.pay(t, "T1", 1000)
	var reached, withAuth atomic.Int32
	elsewhere := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached.Add(1)
		if r.Header.Get("Authorization") != "" {
			withAuth.Add(1)
		}
		e.sim.Handler().ServeHTTP(w, r) // the bill itself: its hash would match
	}))
	t.Cleanup(elsewhere.Close)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v3/billdownload/file" {
			http.Redirect(w, r, elsewhere.URL+r.URL.RequestURI(), http.StatusFound)
			return
		}
		e.sim.Handler().ServeHTTP(w, r)
	}))
	t.Cleanup(front.Close)
	c, err := wechatpay.NewClient(context.Background(), clientConfig(e.keys, front.URL))
	if err != nil {
		t.Fatal(err)
	}
	bill, err := c.TradeBill(context.Background(), today())
	if !wechatpay.IsUnknownOutcome(err) || strings.Contains(err.Error(), "token=") {
		t.Errorf("redirected download: err = %v (bill of %d bytes), want an unknown outcome, without the link's token", err, len(bill))
	}
	if n := reached.Load(); n != 0 {
		t.Errorf("the client followed the redirect: %d requests reached its target, %d of them signed", n, withAuth.Load())
	}
}
