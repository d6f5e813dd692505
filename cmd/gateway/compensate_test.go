package main

import (
	"context"
	"errors"
	"net"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"paygateway/gateway/compensate"
	"paygateway/gateway/wechatpay"
	"paygateway/gateway/wechatpay/wxpaysim"
	"paygateway/ledger"
)

// startWithWechat runs a gateway whose outbound WeChat Pay client talks to
// a simulator that delivers its notifications back to the gateway.
func startWithWechat(t *testing.T, b backend, invURL string, edits ...func(*Config)) (*Main, *wxpaysim.Sim) {
	t.Helper()
	k, dir := testKeys(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t, b)
	fastOutbox(&cfg, invURL)
	w := &cfg.WechatPay
	w.MerchantSerial, w.MerchantPrivateKeyFile = k.MerchantSerial, filepath.Join(dir, "merchant_private_key.pem")
	w.BaseURL, w.Timeout = "http://"+ln.Addr().String(), 2*time.Second
	cfg.Compensation = CompensationConfig{Interval: 50 * time.Millisecond, SafetyBuffer: 150 * time.Millisecond, Batch: 2}
	cfg.Finance.DailyReconcileAt = "off" // it reconciles past days on start; tested in gateway
	for _, edit := range edits {
		edit(&cfg)
	}
	m := startGateway(t, cfg)
	sim := wxpaysim.New(k, wxpaysim.Options{NotifyURL: m.URL() + paymentPath, NotifyRetryDelays: []time.Duration{}})
	srv := httptest.NewUnstartedServer(sim.Handler())
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	t.Cleanup(func() { srv.Close(); sim.Close() })
	return m, sim
}

func registerOrder(t *testing.T, m *Main, no string, amount int64, expire time.Time) {
	t.Helper()
	status, body := apiCall(t, "POST", m.URL()+"/v1/orders", serviceKey, map[string]any{
		"out_trade_no": no, "amount_total": amount, "payer_openid": "openid-" + no, "expire_at": expire.Format(time.RFC3339Nano)})
	if status != 201 {
		t.Fatalf("register %s: status=%d body=%v", no, status, body)
	}
}

func waitPayment(t *testing.T, m *Main, no string, state ledger.PaymentState) *ledger.Payment {
	t.Helper()
	var p *ledger.Payment
	waitFor(t, 20*time.Second, "payment "+no+" in "+string(state), func() bool {
		var err error
		p, err = m.Store.Payment(context.Background(), no)
		return err == nil && p.State == state
	})
	return p
}

func TestLostCallbackCompensated(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			inv, url := startInventory(t)
			m, sim := startWithWechat(t, b, url)
			ctx := context.Background()
			lost, expiring := uniqueNo("lost"), uniqueNo("exp")
			registerOrder(t, m, lost, 800, time.Now().Add(time.Hour))
			// Expiring in 2 s: time for the call on a loaded machine.
			registerOrder(t, m, expiring, 500, time.Now().Add(2*time.Second))
			for i := 0; i < 3; i++ { // more than one page of Batch
				registerOrder(t, m, uniqueNo("open"), 100, time.Now().Add(time.Hour))
			}
			tx, err := sim.Pay(ctx, lost, 800, "openid-"+lost, true)
			if err != nil {
				t.Fatalf("pay at the simulator: %v", err)
			}

			p := waitPayment(t, m, lost, ledger.PaymentSuccess)
			if p.TransactionID != tx.TransactionID || p.AmountTotal != 800 {
				t.Fatalf("payment = %+v, want transaction %s of 800", p, tx.TransactionID)
			}
			history, _ := m.Store.History(ctx, lost)
			if last := history[len(history)-1]; last.Source != ledger.SourceQuery || last.Ref != "query:"+tx.TransactionID {
				t.Fatalf("last history row = %+v, want source query", last)
			}
			onlyJob(t, m.Store, lost, ledger.JobDone)
			if got := inv.ConfirmCount(lost); got != 1 {
				t.Fatalf("confirmations = %d, want 1", got)
			}
			before := ledgerCounts(t, m, lost)

			// The callback arrives late: the same notification again, and a
			// fresh signed one for the same transaction.
			if status, err := sim.ResendPayment(ctx, lost); err != nil || status != 204 {
				t.Fatalf("late callback: status=%d err=%v, want 204", status, err)
			}
			k, _ := testKeys(t)
			fresh := mustNotification(k.PaymentNotification(tx, wxpaysim.PublicKeyMode(), time.Now()))
			if status, body := post(t, m.URL()+paymentPath, fresh); status != 204 {
				t.Fatalf("fresh late callback: status=%d body=%v", status, body)
			}
			time.Sleep(200 * time.Millisecond) // give a wrongly queued job the time to run
			if after := ledgerCounts(t, m, lost); after != before {
				t.Fatalf("late callbacks changed payments/history/notifications from %v to %v", before, after)
			}
			onlyJob(t, m.Store, lost, ledger.JobDone)
			if got := inv.ConfirmCount(lost); got != 1 {
				t.Fatalf("confirmations after late callbacks = %d, want 1", got)
			}

			waitPayment(t, m, expiring, ledger.PaymentClosed)
			if h, _ := m.Store.History(ctx, expiring); h[len(h)-1].Source != ledger.SourceQuery || h[len(h)-1].From != "EXPECTED" {
				t.Fatalf("expired order closed by %+v", h[len(h)-1])
			}
			if jobs, err := m.Store.Outbox().JobsOf(ctx, expiring); err != nil || len(jobs) != 0 {
				t.Fatalf("closed order has jobs %+v, err %v; want none", jobs, err)
			}
			// Counted just after the ledger commit the waits above saw.
			waitFor(t, 20*time.Second, "one recovered and one closed check counted", func() bool {
				return scrape(t, m.URL(), `gateway_compensation_checks_total{result="recovered"}`) == 1 &&
					scrape(t, m.URL(), `gateway_compensation_checks_total{result="closed"}`) == 1
			})
		})
	}
}

// TestExpiredOrderClosedAtWechat: an expired order still unpaid at WeChat
// Pay is closed there first (it can no longer be paid), then in the
// ledger; an order the payer pays between the job's query and its close
// call is recorded as paid, not closed.
func TestExpiredOrderClosedAtWechat(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			_, url := startInventory(t)
			m, sim := startWithWechat(t, b, url, func(c *Config) { c.Compensation.Interval = time.Hour })
			ctx := context.Background()
			unpaid, late := uniqueNo("unp"), uniqueNo("late")
			expire := time.Now().Add(2 * time.Second) // after both registrations, even on a loaded machine
			for _, no := range []string{unpaid, late} {
				registerOrder(t, m, no, 500, expire)
				if err := sim.RegisterOrder(no, 500); err != nil {
					t.Fatal(err)
				}
			}
			time.Sleep(time.Until(expire) + 50*time.Millisecond) // both expire
			wx := &payBeforeClose{Client: m.Wechat, sim: sim, order: late}
			job := compensate.New(compensate.Config{SafetyBuffer: time.Millisecond, MchID: m.Config.WechatPay.MchID}, m.Store, wx)
			if changed, err := job.RunOnce(ctx); err != nil || changed != 2 {
				t.Fatalf("RunOnce = %d, %v; want 2 orders changed", changed, err)
			}
			if o, _ := sim.Order(unpaid); o.TradeState != wxpaysim.TradeClosed || o.CloseCalls != 1 {
				t.Errorf("unpaid order at WeChat Pay: %+v, want closed by one close call", o)
			}
			if p := waitPayment(t, m, unpaid, ledger.PaymentClosed); p.TransactionID != "" {
				t.Errorf("closed order %+v", p)
			}
			if _, err := sim.Pay(ctx, unpaid, 500, "openid-"+unpaid, true); !errors.Is(err, wxpaysim.ErrOrderState) {
				t.Errorf("paying the closed order: %v, want refused", err)
			}
			o, _ := sim.Order(late)
			if o.TradeState != wxpaysim.TradeSuccess || o.CloseCalls != 0 {
				t.Errorf("late order at WeChat Pay: %+v, want paid and not closed", o)
			}
			if p := waitPayment(t, m, late, ledger.PaymentSuccess); p.TransactionID != o.TransactionID {
				t.Errorf("late order in the ledger: %+v, want transaction %s", p, o.TransactionID)
			}
		})
	}
}

// payBeforeClose is WeChat Pay with a payer who pays order at the last
// moment: right after the job's first query found it unpaid.
type payBeforeClose struct {
	*wechatpay.Client
	sim   *wxpaysim.Sim
	order string
	paid  bool
}

func (q *payBeforeClose) QueryOrder(ctx context.Context, no string) (*wechatpay.Transaction, error) {
	tx, err := q.Client.QueryOrder(ctx, no)
	if no == q.order && !q.paid && err == nil && tx.TradeState == "NOTPAY" {
		q.paid = true
		if _, err := q.sim.Pay(ctx, no, 500, "openid-"+no, true); err != nil {
			return nil, err
		}
	}
	return tx, err
}
