package wxpaysim_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/wechatpay-apiv3/wechatpay-go/core"
	"github.com/wechatpay-apiv3/wechatpay-go/core/option"

	"paygateway/gateway/wechatpay/wxpaysim"
)

const (
	testMchID = "1900000109"
	testAppID = "wxd678efh567hg6787"
)

// sharedKeys generates one key set for the package: keys are immutable.
var sharedKeys = sync.OnceValues(func() (*wxpaysim.Keys, error) {
	return wxpaysim.GenerateKeys(testMchID, testAppID)
})

func testKeys(t *testing.T) *wxpaysim.Keys {
	t.Helper()
	k, err := sharedKeys()
	if err != nil {
		t.Fatalf("GenerateKeys: %v", err)
	}
	return k
}

// startSim serves a new simulator over loopback.
func startSim(t *testing.T, opts wxpaysim.Options) (*wxpaysim.Sim, *httptest.Server) {
	t.Helper()
	sim := wxpaysim.New(testKeys(t), opts)
	srv := httptest.NewServer(sim.Handler())
	t.Cleanup(srv.Close)
	t.Cleanup(sim.Close) // runs first: releases held connections
	return sim, srv
}

// rewrite sends wechatpay-go's hard-coded host to the simulator.
type rewrite struct{ target *url.URL }

func (r rewrite) RoundTrip(req *http.Request) (*http.Response, error) {
	out := req.Clone(req.Context())
	out.URL.Scheme, out.URL.Host, out.Host = r.target.Scheme, r.target.Host, ""
	return http.DefaultTransport.RoundTrip(out)
}

// sdkClient is a plain wechatpay-go client pointed at the simulator.
func sdkClient(t *testing.T, k *wxpaysim.Keys, base string, timeout time.Duration) *core.Client {
	t.Helper()
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	c, err := core.NewClient(context.Background(),
		option.WithWechatPayPublicKeyAuthCipher(k.MchID, k.MerchantSerial, k.MerchantKey, k.PublicKeyID, k.PublicKey()),
		option.WithHTTPClient(&http.Client{Timeout: timeout, Transport: rewrite{u}}))
	if err != nil {
		t.Fatalf("core.NewClient: %v", err)
	}
	return c
}

// waitFor polls cond until it holds or 5 s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// refundSim starts a simulator whose refunds settle only on SettleRefunds
// and are notified to m, with order T1 of 100 fen paid by o1; it returns
// the simulator, its server and a merchant's SDK client.
func refundSim(t *testing.T, m *merchant) (*wxpaysim.Sim, *httptest.Server, *core.Client) {
	t.Helper()
	sim, srv := startSim(t, wxpaysim.Options{RefundNotifyURL: m.serve(t).URL, RefundSettleDelay: -1})
	if _, err := sim.Pay(context.Background(), "T1", 100, "o1", true); err != nil {
		t.Fatal(err)
	}
	return sim, srv, sdkClient(t, testKeys(t), srv.URL, 5*time.Second)
}

// testClock is a clock for Options.Now that starts now and moves only by
// advance.
func testClock() (clock func() time.Time, advance func(time.Duration)) {
	var mu sync.Mutex
	now := time.Now()
	clock = func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		return now
	}
	advance = func(d time.Duration) {
		mu.Lock()
		defer mu.Unlock()
		now = now.Add(d)
	}
	return clock, advance
}
