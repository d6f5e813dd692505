package main

import (
	"context"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"
)

// TestWrongKeysLockTheAddressOut guesses keys in parallel at one instance
// until the address's burst of wrong keys is spent. Then every key from
// that address, the right one too, gets 429 ERATE_LIMITED with
// Retry-After: on MariaDB and Redis at a second instance too (the count
// is shared), on SQLite without Redis at the same one. None of it is
// audited. (The refill is tested with clocks of their own: gateway's
// TestWrongKeysLockTheAddressOut, redisstore's TestRateLimitRefills…;
// here the lockout lasts 10 s, so that a slow machine cannot outlast it.)
func TestWrongKeysLockTheAddressOut(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			cfg := testConfig(t, b)
			cfg.Auth.FailedKeysPerMinute, cfg.Auth.FailedKeysBurst = 6, 10
			instances := []*Main{startGateway(t, cfg)}
			if b.redis {
				instances = append(instances, startGateway(t, cfg))
			}
			first, second := instances[0], instances[len(instances)-1]
			const path = "/v1/ledger/payments"
			if status, body, _ := getRaw(t, first.URL()+path, financeKey, ""); status != 200 {
				t.Fatalf("right key before any guess: %d %s", status, body)
			}
			for i, status := range guessKeys(t, first.URL()+path, 10) {
				if status != http.StatusUnauthorized {
					t.Fatalf("guess %d of the burst: status %d, want 401", i, status)
				}
			}
			for _, key := range []string{financeKey, "gwk_one_more_guess"} {
				assertLimited(t, "GET", second.URL()+path, key, nil)
			}
			if f := metricFamily(t, second, "gateway_rate_limited_total"); f == nil || sumCounters(f) != 2 {
				t.Fatalf("gateway_rate_limited_total = %v, want the 2 lockouts", f)
			}
			refusals := map[string]float64{}
			for _, m := range instances {
				for _, s := range metricFamily(t, m, "gateway_api_key_refusals_total").GetMetric() {
					refusals[s.GetLabel()[0].GetValue()] += s.GetCounter().GetValue()
				}
			}
			if refusals["unknown"] != 10 || refusals["locked_out"] != 2 {
				t.Fatalf("gateway_api_key_refusals_total = %v, want unknown 10 and locked_out 2", refusals)
			}
			assertAudited(t, first, 1)
		})
	}
}

// guessKeys sends n made-up keys at once and returns their statuses.
func guessKeys(t *testing.T, url string, n int) []int {
	statuses := make([]int, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			var err error
			if statuses[i], err = getQuietly(url, "gwk_guess_"+strconv.Itoa(i)); err != nil {
				t.Errorf("guess %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	return statuses
}

// assertAudited checks that the audit log holds exactly n entries, all
// the right key's successful reads.
func assertAudited(t *testing.T, m *Main, n int) {
	t.Helper()
	entries, err := m.Store.AuditLog(context.Background(), 100)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Principal != "fin" || e.Status != 200 {
			t.Fatalf("audit entry %+v: only the right key's reads belong there", e)
		}
	}
	if len(entries) != n {
		t.Fatalf("%d audit entries, want %d", len(entries), n)
	}
}

// TestHungRedisKeyedRequestWaitsOnceAtMost: with Redis hung, a keyed
// request now asks it twice (the wrong-key lockout, then the caller's
// rate limit). Right and wrong keys fired at once still get their answers
// from the in-process fallbacks, each request making one Redis call at
// most: the first timeout opens the breaker for the second.
func TestHungRedisKeyedRequestWaitsOnceAtMost(t *testing.T) {
	cfg := testConfig(t, backend{name: "sqlite"})
	cfg.Redis.Addr = hungRedis(t)
	cfg.Redis.BreakerCooldown = time.Minute
	cfg.RateLimit.LedgerPerMinute, cfg.RateLimit.LedgerBurst = 600, 100
	cfg.Auth.FailedKeysPerMinute, cfg.Auth.FailedKeysBurst = 600, 100
	m := startGateway(t, cfg)
	const n = 10
	statuses := make([]int, 2*n)
	var wg sync.WaitGroup
	for i := range statuses {
		key := financeKey
		if i%2 == 1 {
			key = "gwk_wrong_" + strconv.Itoa(i)
		}
		wg.Go(func() { statuses[i], _ = getQuietly(m.URL()+"/v1/ledger/payments", key) })
	}
	wg.Wait()
	for i, s := range statuses {
		if want := []int{200, 401}[i%2]; s != want {
			t.Errorf("request %d: status %d, want %d", i, s, want)
		}
	}
	if calls := redisCalls(t, m); calls == 0 || calls > uint64(len(statuses)) {
		t.Fatalf("%d Redis calls for %d requests, want between 1 and one per request", calls, len(statuses))
	}
	assertRedisCallsBounded(t, m, cfg.Redis.OpTimeout+250*time.Millisecond)
}

// getQuietly is a GET with an API key that returns its error instead of
// stopping the test, for goroutines.
func getQuietly(url, key string) (int, error) {
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("X-Api-Key", key)
	resp, err := httpClient.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// TestRefusedKeysLogTheirAddress: a revoked or guessed key's 401, and the
// 429 of the address it locked out, name that address in their access
// line, where the on-call looks for who still uses a revoked key (the
// audit log keeps known keys only, the metrics no address); a request
// with a right key does not. The address is the client's as
// http.trusted_proxies lets it be read: behind a proxy, its
// X-Forwarded-For, not the proxy's own; without one, the TCP peer's,
// whatever X-Forwarded-For says.
func TestRefusedKeysLogTheirAddress(t *testing.T) {
	for _, pc := range []struct {
		name    string
		proxies []string
		addr    string
	}{{"no proxies", nil, "127.0.0.1"}, {"loopback is the proxy", []string{"127.0.0.1/32"}, "203.0.113.7"}} {
		t.Run(pc.name, func(t *testing.T) {
			logs := captureLogs(t)
			cfg := testConfig(t, backends[0])
			cfg.Auth.FailedKeysPerMinute, cfg.Auth.FailedKeysBurst = 1, 1
			cfg.HTTP.TrustedProxies = pc.proxies
			m := startGateway(t, cfg)
			const path = "/v1/ledger/payments"
			for _, tc := range []struct {
				key        string
				status     int
				loggedAddr string
			}{{financeKey, 200, ""}, {"gwk_revoked_one", 401, pc.addr}, {financeKey, 429, pc.addr}} {
				logs.Reset()
				req, _ := http.NewRequest("GET", m.URL()+path, nil)
				req.Header.Set("X-Api-Key", tc.key)
				req.Header.Set("X-Forwarded-For", "203.0.113.7")
				resp, err := httpClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != tc.status {
					t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
				}
				var line map[string]any
				for _, l := range logLines(t, logs.String(), "http request") {
					if l["route"] == path {
						line = l
					}
				}
				if line == nil {
					t.Fatalf("no access line of the %d; logs:\n%s", tc.status, logs.String())
				}
				if got, _ := line["addr"].(string); got != tc.loggedAddr {
					t.Fatalf("access line of the %d: addr %q, want %q (%v)", tc.status, got, tc.loggedAddr, line)
				}
			}
		})
	}
}
