package wxpaysim_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"paygateway/gateway/wechatpay/wxpaysim"
)

func postJSON(t *testing.T, url string, in, out any) int {
	t.Helper()
	body, _ := json.Marshal(in)
	resp, err := http.Post(url, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			t.Fatalf("POST %s: decode: %v", url, err)
		}
	}
	return resp.StatusCode
}

func getJSON(t *testing.T, url string, out any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		t.Fatalf("GET %s: decode: %v", url, err)
	}
}

func TestControlEndpoints(t *testing.T) {
	m := &merchant{}
	sim, srv := startSim(t, wxpaysim.Options{NotifyURL: m.serve(t).URL, RefundSettleDelay: -1})
	if st := postJSON(t, srv.URL+"/sim/orders", wxpaysim.OrderRequest{OutTradeNo: "T0", Amount: 50}, nil); st != 200 {
		t.Fatalf("register status=%d", st)
	}
	var paid wxpaysim.PayResponse
	if st := postJSON(t, srv.URL+"/sim/pay", wxpaysim.PayRequest{OutTradeNo: "T1", Amount: 100, OpenID: "o1"}, &paid); st != 200 {
		t.Fatalf("pay status=%d", st)
	}
	if paid.Transaction.TradeState != "SUCCESS" || paid.NotifyStatus != http.StatusNoContent {
		t.Fatalf("pay=%+v", paid)
	}
	var resend map[string]int
	postJSON(t, srv.URL+"/sim/notify/resend", wxpaysim.ResendRequest{OutTradeNo: "T1"}, &resend)
	if resend["notify_status"] != http.StatusNoContent {
		t.Fatalf("resend=%v", resend)
	}
	if st := postJSON(t, srv.URL+"/sim/notify/resend", wxpaysim.ResendRequest{OutTradeNo: "T0"}, nil); st != http.StatusConflict {
		t.Fatalf("resend unpaid status=%d, want 409", st)
	}
	var orders []wxpaysim.OrderRecord
	getJSON(t, srv.URL+"/sim/orders", &orders)
	if len(orders) != 2 || orders[0].TradeState != "NOTPAY" || orders[1].NotifyAttempts != 2 {
		t.Fatalf("orders=%+v", orders)
	}
	var f wxpaysim.Faults
	postJSON(t, srv.URL+"/sim/faults", wxpaysim.Faults{DropNext: 2, Delay: time.Millisecond}, &f)
	if sim.CurrentFaults().DropNext != 2 || f.Delay != time.Millisecond {
		t.Fatalf("faults=%+v", f)
	}
	var refunds []wxpaysim.RefundRecord
	getJSON(t, srv.URL+"/sim/refunds", &refunds)
	if len(refunds) != 0 {
		t.Fatalf("refunds=%+v", refunds)
	}
	var settled map[string]int
	postJSON(t, srv.URL+"/sim/refunds/settle", struct{}{}, &settled)
	if settled["settled"] != 0 {
		t.Fatalf("settled=%v", settled)
	}
}

func TestStartShutdown(t *testing.T) {
	cfg := wxpaysim.DefaultConfig()
	cfg.Addr = "127.0.0.1:0"
	cfg.KeysDir = filepath.Join(t.TempDir(), "keys")
	s, err := wxpaysim.Start(cfg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	var orders []wxpaysim.OrderRecord
	getJSON(t, s.URL+"/sim/orders", &orders)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if _, err := wxpaysim.LoadKeys(cfg.KeysDir); err != nil {
		t.Fatalf("keys not persisted: %v", err)
	}
}
