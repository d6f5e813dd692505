package main

import (
	"sync/atomic"
	"testing"
	"time"

	"gorm.io/gorm"

	"paygateway/gateway/wechatpay/wxpaysim"
)

// TestBurstIsGroupCommitted fires 100 first deliveries and 50
// redeliveries of them at once: every one is answered 204, every order has
// one payment, one history row, one notification and one outbox job, and
// the ledger shared transactions between notifications.
//
// Every delivery must be answered within the notify timeout, which the
// whole burst shares: the race-enabled gateway on SQLite, beside other
// test packages, took 1-2.5 s for 300 deliveries and once more than 4 s
// (258 answered 503). Half the burst leaves it room (testConfig gives
// the longest timeout WeChat Pay's wait allows); 150 still group commit.
func TestBurstIsGroupCommitted(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			m := startGateway(t, testConfig(t, b))
			k, _ := testKeys(t)
			nos := make([]string, 100)
			var ns []wxpaysim.Notification
			for i := range nos {
				nos[i] = uniqueNo("burst")
				ns = append(ns, mustNotification(k.PaymentNotification(paidTx(k, nos[i], 100), wxpaysim.PublicKeyMode(), time.Now())))
			}
			for i := range 50 {
				ns = append(ns, mustNotification(ns[i*2].Resign(k, wxpaysim.PublicKeyMode(), time.Now())))
			}
			fireAll(t, m, ns)
			assertRecordedOnce(t, m, nos...)
			var jobs int64
			m.Store.DB().Table("outbox_jobs").Where("out_trade_no IN ?", nos).Count(&jobs)
			if jobs != int64(len(nos)) {
				t.Fatalf("outbox jobs = %d, want %d", jobs, len(nos))
			}
			assertGroupCommitted(t, m)
		})
	}
}

// assertGroupCommitted checks, from gateway_notify_batch_size, that some
// transaction held more than one notification.
func assertGroupCommitted(t *testing.T, m *Main) {
	t.Helper()
	f := metricFamily(t, m, "gateway_notify_batch_size")
	for _, s := range f.GetMetric() {
		h := s.GetHistogram()
		if s.GetLabel()[0].GetValue() == "batched" && h.GetSampleCount() > 0 && h.GetSampleSum() > float64(h.GetSampleCount()) {
			return
		}
	}
	t.Fatalf("no notifications shared a transaction: %v", f)
}

// TestRedeliveryAnsweredByTheGate: once a notification is committed, its
// redelivery (signed afresh) is answered 204 from the gate's committed
// mark without a single database statement; with Redis, also by another
// instance (which has nothing in memory: the mark is Redis's).
func TestRedeliveryAnsweredByTheGate(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			cfg := testConfig(t, b)
			m := startGateway(t, cfg)
			k, _ := testKeys(t)
			no := uniqueNo("gate")
			n := mustNotification(k.PaymentNotification(paidTx(k, no, 100), wxpaysim.PublicKeyMode(), time.Now()))
			if status, body := post(t, m.URL()+paymentPath, n); status != 204 {
				t.Fatalf("first delivery: %d %v", status, body)
			}
			statements := countStatements(t, m.Store.DB())
			again := mustNotification(n.Resign(k, wxpaysim.PublicKeyMode(), time.Now()))
			if status, body := post(t, m.URL()+paymentPath, again); status != 204 {
				t.Fatalf("redelivery: %d %v", status, body)
			}
			if got := statements.Load(); got != 0 {
				t.Fatalf("the redelivery ran %d database statements, want 0", got)
			}
			if status, body := post(t, m.URL()+paymentPath, again); status != 401 || body["reason"] != "EREPLAY" {
				t.Fatalf("replayed request: status %d %v, want 401 EREPLAY", status, body)
			}
			if cfg.Redis.Addr == "" {
				return
			}
			other := startGateway(t, cfg)
			waitFor(t, 20*time.Second, "a redelivery to another instance answered from Redis's mark", func() bool {
				statements := countStatements(t, other.Store.DB())
				resent := mustNotification(n.Resign(k, wxpaysim.PublicKeyMode(), time.Now()))
				status, _ := post(t, other.URL()+paymentPath, resent)
				return status == 204 && statements.Load() == 0
			})
		})
	}
}

// countStatements counts every gorm statement run on db from now on.
func countStatements(t *testing.T, db *gorm.DB) *atomic.Int64 {
	t.Helper()
	var n atomic.Int64
	count := func(*gorm.DB) { n.Add(1) }
	cb := db.Callback()
	for _, err := range []error{
		cb.Query().Before("gorm:query").Register("test:count_query", count),
		cb.Create().Before("gorm:create").Register("test:count_create", count),
		cb.Update().Before("gorm:update").Register("test:count_update", count),
		cb.Raw().Before("gorm:raw").Register("test:count_raw", count),
		cb.Row().Before("gorm:row").Register("test:count_row", count),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	return &n
}

// TestDistinctNotificationsOfOneOrder fires 30 different notifications
// (own ids) paying one order at once: the per-notification gate lets them
// all through, and the order's row lock and unique keys leave one
// payment, one history row and one stored notification.
func TestDistinctNotificationsOfOneOrder(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			m := startGateway(t, testConfig(t, b))
			k, _ := testKeys(t)
			no := uniqueNo("one")
			ns := make([]wxpaysim.Notification, 30)
			for i := range ns {
				ns[i] = mustNotification(k.PaymentNotification(paidTx(k, no, 700), wxpaysim.PublicKeyMode(), time.Now()))
			}
			if ns[0].ID == ns[1].ID {
				t.Fatal("the simulator gave two notifications one id")
			}
			fireAll(t, m, ns)
			assertRecordedOnce(t, m, no)
		})
	}
}
