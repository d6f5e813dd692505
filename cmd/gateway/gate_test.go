package main

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"paygateway/gateway/wechatpay/wxpaysim"
)

// TestWaiterMarksTheNotificationDone: a redelivery that waited for
// another delivery's lock and then found the notification recorded writes
// the "done" mark, so the next redelivery to any instance is answered
// by Redis alone.
func TestWaiterMarksTheNotificationDone(t *testing.T) {
	cfg := testConfig(t, backend{name: "mysql+redis", mysql: true, redis: true})
	first, m := startGateway(t, cfg), startGateway(t, cfg) // first's memory knows the notification
	k, _ := testKeys(t)
	rdb := redis.NewClient(&redis.Options{Addr: cfg.Redis.Addr})
	defer rdb.Close()
	ctx := context.Background()
	n := mustNotification(k.PaymentNotification(paidTx(k, uniqueNo("wait"), 300), wxpaysim.PublicKeyMode(), time.Now()))
	if status, body := post(t, first.URL()+paymentPath, n); status != 204 {
		t.Fatalf("first delivery: status=%d body=%v", status, body)
	}
	done, lock := cfg.Redis.Prefix+"done:"+n.ID, cfg.Redis.Prefix+"lock:notify:"+n.ID
	waitFor(t, 10*time.Second, "the first delivery's done mark", func() bool { return rdb.Exists(ctx, done).Val() == 1 })
	rdb.Del(ctx, done)
	if err := rdb.Set(ctx, lock, "another-delivery", 5*time.Second).Err(); err != nil {
		t.Fatal(err)
	}
	again := mustNotification(n.Resign(k, wxpaysim.PublicKeyMode(), time.Now()))
	start := time.Now()
	time.AfterFunc(200*time.Millisecond, func() { rdb.Del(ctx, lock) })
	if status, body := post(t, m.URL()+paymentPath, again); status != 204 {
		t.Fatalf("waiting redelivery: status=%d body=%v", status, body)
	}
	if took := time.Since(start); took < 200*time.Millisecond {
		t.Fatalf("the redelivery took %v: it did not wait for the held lock", took)
	}
	waitFor(t, 10*time.Second, "the waiter's done mark", func() bool { return rdb.Exists(ctx, done).Val() == 1 })
}
