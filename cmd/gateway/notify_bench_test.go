package main

import (
	"io"
	"net/http"
	"os"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"paygateway/gateway/wechatpay/wxpaysim"
)

// BenchmarkPaymentNotification posts pre-signed new notifications to a
// gateway on MySQL and Redis over real HTTP from 16 goroutines; run it
// with -cpuprofile to see where a callback's CPU goes.
func BenchmarkPaymentNotification(b *testing.B) {
	m, k := benchGateway(b)
	ns := make([]wxpaysim.Notification, b.N+1)
	for i := range ns {
		ns[i] = mustNotification(k.PaymentNotification(paidTx(k, uniqueNo("bn"), 100), wxpaysim.PublicKeyMode(), time.Now()))
	}
	postParallel(b, m, ns)
}

// BenchmarkDuplicateNotification posts pre-signed redeliveries of one
// committed notification from 16 goroutines; profile the duplicate path
// with -cpuprofile.
func BenchmarkDuplicateNotification(b *testing.B) {
	m, k := benchGateway(b)
	first := mustNotification(k.PaymentNotification(paidTx(k, uniqueNo("bd"), 100), wxpaysim.PublicKeyMode(), time.Now()))
	ns := make([]wxpaysim.Notification, b.N+1)
	ns[0] = first
	for i := 1; i < len(ns); i++ {
		ns[i] = mustNotification(first.Resign(k, wxpaysim.PublicKeyMode(), time.Now()))
	}
	postParallel(b, m, ns)
}

func benchGateway(b *testing.B) (*Main, *wxpaysim.Keys) {
	k, _ := testKeys(b)
	cfg := testConfig(b, backend{name: "mysql+redis", mysql: true, redis: true})
	cfg.Log.Level = "error"
	return startGateway(b, cfg), k
}

// postParallel posts ns[0] untimed, then ns[1:] from 16 goroutines.
func postParallel(b *testing.B, m *Main, ns []wxpaysim.Notification) {
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	post := func(n wxpaysim.Notification) {
		resp, err := n.Post(b.Context(), client, m.URL()+paymentPath)
		if err != nil || resp.StatusCode != 204 {
			b.Errorf("post: %v %v", err, resp)
			return
		}
		resp.Body.Close()
	}
	post(ns[0])
	var next atomic.Int64
	b.SetParallelism(benchParallelism)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			post(ns[next.Add(1)])
		}
	})
}

// BenchmarkRefundCreate creates refunds (each on its own paid order, with
// its own Idempotency-Key) from 16 goroutines against the simulator;
// profile the refund path with -cpuprofile.
func BenchmarkRefundCreate(b *testing.B) {
	e := startRefundEnv(b, backend{name: "mysql+redis", mysql: true, redis: true}, func(c *Config) { c.Log.Level = "error" })
	orders := make([]string, b.N)
	for i := range orders {
		orders[i] = e.pay(b, "o-bench", 1000)
	}
	tok := token(b, "o-bench")
	var next atomic.Int64
	b.SetParallelism(8)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			no := orders[next.Add(1)-1]
			if a := e.refund(b, tok, "k-"+no, refundBody(no, 10)); a.status != 201 {
				b.Errorf("refund %s: %d %s", no, a.status, a.body)
			}
		}
	})
}

// benchParallelism × GOMAXPROCS goroutines post at once; GWBENCH_PAR sets it.
var benchParallelism = func() int {
	if n, err := strconv.Atoi(os.Getenv("GWBENCH_PAR")); err == nil && n > 0 {
		return n
	}
	return 16
}()

// BenchmarkKeyedRead reads one page of the payment ledger with the finance
// key from 4 × GOMAXPROCS goroutines (within the back-office bulkhead of
// 16 requests at once), with the wrong-key lockout at its default (one
// more Redis call per keyed request, to check the caller's address) and
// off: the difference is what the lockout costs a keyed request.
func BenchmarkKeyedRead(b *testing.B) {
	for _, perMinute := range []int{30, 0} {
		b.Run("failed_keys_per_minute="+strconv.Itoa(perMinute), func(b *testing.B) {
			cfg := testConfig(b, backend{name: "mysql+redis", mysql: true, redis: true})
			cfg.Auth.FailedKeysPerMinute, cfg.Auth.FailedKeysBurst = perMinute, 20
			m := startGateway(b, cfg)
			client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
			b.SetParallelism(4)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					req, _ := http.NewRequestWithContext(b.Context(), "GET", m.URL()+"/v1/ledger/payments?limit=1", nil)
					req.Header.Set("X-Api-Key", financeKey)
					resp, err := client.Do(req)
					if err != nil || resp.StatusCode != 200 {
						b.Errorf("read: %v %v", err, resp)
						return
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			})
		})
	}
}
