package gateway_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/gin-gonic/gin"

	"paygateway/gateway"
	"paygateway/gateway/redisstore"
	"paygateway/gateway/redisstore/redistest"
	"paygateway/gateway/wechatpay"
	"paygateway/ledger"
	"paygateway/ledger/ledgertest"
)

// sharedRedisEdge is rfEdge with the production guard wiring: Redis
// first, memory fallback, one breaker.
func sharedRedisEdge(t *testing.T, s *ledger.Store, cfg redisstore.Config) *rfEdge {
	t.Helper()
	keys := rfKeys(t)
	v, err := wechatpay.NewVerifier(wechatpay.NotifyConfig{APIv3Key: keys.APIv3Key, PublicKeyID: keys.PublicKeyID,
		PublicKey: keys.PublicKey()})
	if err != nil {
		t.Fatal(err)
	}
	c := redisstore.NewClient(cfg)
	rs := redisstore.New(c, cfg)
	t.Cleanup(func() { rs.Close(); c.Close() })
	locks := gateway.NewMemoryLocker()
	b := &gateway.Breaker{}
	gate := gateway.FallbackGate{Primary: rs, Secondary: gateway.NewMemoryGate(1000, locks), Breaker: b}
	locker := gateway.FallbackLocker{Primary: rs, Secondary: locks, Breaker: b}
	p := gateway.NewProcessor(gateway.ProcessorConfig{MchID: keys.MchID, AppID: keys.AppID, BatchWorkers: 1, BatchMax: 1},
		v, gate, locker, s)
	t.Cleanup(func() { _ = p.Close() })
	gin.SetMode(gin.TestMode)
	return &rfEdge{keys: keys, store: s, router: gateway.NewRouter(gateway.Deps{Processor: p, Store: s}),
		batches: make(chan [2]int, 100)}
}

// TestRedisDoneMarkIsCheckedInTheLedger: Redis's "done" mark is a hint.
// Two deployments sharing one Redis and prefix (staging beside
// production, a blue/green pair on a restored database): a notification
// committed by A is not answered 2xx by B, whose ledger lacks it; B
// records it. A redelivery to A itself (whose ledger holds it) is still
// answered.
func TestRedisDoneMarkIsCheckedInTheLedger(t *testing.T) {
	cfg := redistest.Config(t)
	keys := rfKeys(t)
	sa, sb := ledgertest.OpenSQLite(t), ledgertest.OpenSQLite(t)
	a, b := sharedRedisEdge(t, sa, cfg), sharedRedisEdge(t, sb, cfg)
	n := rfPaymentNotice(t, keys, "rd-done-1", "SUCCESS")
	if code := a.post(t, "payment", n); code != http.StatusNoContent {
		t.Fatalf("A: %d", code)
	}
	want := rfLedger(t, sa, "rd-done-1")
	if code := b.post(t, "payment", n); code != http.StatusNoContent {
		t.Fatalf("B: %d, want the notification recorded and 204", code)
	}
	if got := rfLedger(t, sb, "rd-done-1"); got != want {
		t.Fatalf("B answered 204; its ledger: %s, want %s", got, want)
	}
	// A third deployment whose database fails answers no 2xx either.
	sc := ledgertest.OpenSQLite(t)
	c := sharedRedisEdge(t, sc, cfg)
	sqlDB, _ := sc.DB().DB()
	_ = sqlDB.Close()
	if code := c.post(t, "payment", n); code < 500 {
		t.Fatalf("C (database closed): %d, want 5xx", code)
	}
}

// TestRedisDoneMarkAfterALostCommit: the ledger lost the commit (an
// asynchronous replica promoted, a point-in-time restore) while Redis
// still marks the notification done: WeChat Pay's redelivery is recorded
// again, not answered from the mark.
func TestRedisDoneMarkAfterALostCommit(t *testing.T) {
	cfg := redistest.Config(t)
	keys := rfKeys(t)
	first, lost := ledgertest.OpenSQLite(t), ledgertest.OpenSQLite(t)
	n := rfPaymentNotice(t, keys, "rd-done-2", "SUCCESS")
	if code := sharedRedisEdge(t, first, cfg).post(t, "payment", n); code != http.StatusNoContent {
		t.Fatalf("first: %d", code)
	}
	want := rfLedger(t, first, "rd-done-2")
	after := sharedRedisEdge(t, lost, cfg) // restarted on the restored database, same Redis
	if code := after.post(t, "payment", n); code != http.StatusNoContent {
		t.Fatalf("redelivery: %d", code)
	}
	if got := rfLedger(t, lost, "rd-done-2"); got != want {
		t.Fatalf("redelivery answered 204; ledger %s, want %s", got, want)
	}
}

// TestFailedDeliveryIsNotMarkedDone: the done mark is written only after
// the ledger commits. A delivery the database fails (here a trigger
// refusing the notice's insert, as an outage would) is answered 5xx, and
// WeChat Pay's redelivery, once the database is back, is recorded: not
// answered 204 from a mark the failed attempt left in this process's
// memory, which would lose the payment.
func TestFailedDeliveryIsNotMarkedDone(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		keys := rfKeys(t)
		e := newRFEdge(t, keys, s, 1)
		db := s.DB()
		down := "CREATE TRIGGER notices_down BEFORE INSERT ON notifications BEGIN SELECT RAISE(ABORT, 'database down'); END"
		if db.Dialector.Name() == "mysql" {
			down = "CREATE TRIGGER notices_down BEFORE INSERT ON notifications FOR EACH ROW " +
				"SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'database down'"
		}
		if err := db.Exec(down).Error; err != nil {
			t.Fatal(err)
		}
		n := rfPaymentNotice(t, keys, "dm-fail-1", "SUCCESS")
		if code := e.post(t, "payment", n); code < 500 {
			t.Fatalf("delivery while the database fails: %d, want 5xx", code)
		}
		if err := db.Exec("DROP TRIGGER notices_down").Error; err != nil {
			t.Fatal(err)
		}
		if code := e.post(t, "payment", n); code != http.StatusNoContent {
			t.Fatalf("redelivery: %d, want 204", code)
		}
		if recorded, err := s.NoticeRecorded(context.Background(), n.ID); err != nil || !recorded {
			t.Fatalf("redelivery answered 204 but the ledger lacks notice %s (recorded %v, err %v)", n.ID, recorded, err)
		}
		if p, err := s.Payment(context.Background(), "dm-fail-1"); err != nil || p.State != ledger.PaymentSuccess {
			t.Fatalf("payment after the redelivery: %+v, %v; want SUCCESS", p, err)
		}
	})
}

// TestRedisDoneMarkIsCheckedForThatNotification guards the ledger lookup
// behind Redis's mark: it must look for that notification, not for any.
// B's ledger holds another notice; a notification A committed (Redis
// marks it done) is still recorded by B, not answered 204 because B's
// ledger is not empty.
func TestRedisDoneMarkIsCheckedForThatNotification(t *testing.T) {
	cfg := redistest.Config(t)
	keys := rfKeys(t)
	sa, sb := ledgertest.OpenSQLite(t), ledgertest.OpenSQLite(t)
	a, b := sharedRedisEdge(t, sa, cfg), sharedRedisEdge(t, sb, cfg)
	if code := b.post(t, "payment", rfPaymentNotice(t, keys, "rd-other-1", "SUCCESS")); code != http.StatusNoContent {
		t.Fatalf("B, another notice: %d", code)
	}
	n := rfPaymentNotice(t, keys, "rd-other-2", "SUCCESS")
	if code := a.post(t, "payment", n); code != http.StatusNoContent {
		t.Fatalf("A: %d", code)
	}
	want := rfLedger(t, sa, "rd-other-2")
	if code := b.post(t, "payment", n); code != http.StatusNoContent {
		t.Fatalf("B: %d, want the notification recorded and 204", code)
	}
	if got := rfLedger(t, sb, "rd-other-2"); got != want {
		t.Fatalf("B answered 204; its ledger: %s, want %s", got, want)
	}
}
