package main

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"paygateway/cmd/internal/stack"
	"paygateway/ledger/ledgertest"
)

// privateRedis is a redis-server of the test's own, speaking TLS on one
// TCP port (its certificate signed by caFile, for 127.0.0.1), plain on
// another and on a unix socket, with an ACL user "gw" whose password is
// "gw-secret".
type privateRedis struct {
	tlsAddr, plainAddr, socket, caFile string
}

func startPrivateRedis(t *testing.T) privateRedis {
	t.Helper()
	bin, err := stack.LookPath("redis-server")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("redis-server: %v", err)
		}
		t.Skipf("redis-server: %v", err)
	}
	dir := t.TempDir()
	caFile, certFile, keyFile := ledgertest.WritePKI(t, dir)
	port, err := stack.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	plain, err := stack.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	r := privateRedis{tlsAddr: "127.0.0.1:" + strconv.Itoa(port), plainAddr: "127.0.0.1:" + strconv.Itoa(plain),
		socket: filepath.Join(dir, "redis.sock"), caFile: caFile}
	args := []string{"--port", strconv.Itoa(plain), "--tls-port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--tls-cert-file", certFile, "--tls-key-file", keyFile, "--tls-ca-cert-file", caFile, "--tls-auth-clients", "no",
		"--unixsocket", r.socket, "--unixsocketperm", "700", "--save", "", "--appendonly", "no", "--dir", dir}
	proc, err := stack.StartProc("redis-server", bin, args, nil, filepath.Join(dir, "redis.log"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proc.Stop(5 * time.Second) })
	c := redis.NewClient(&redis.Options{Network: "unix", Addr: r.socket})
	defer c.Close()
	deadline := time.Now().Add(15 * time.Second)
	for c.Ping(context.Background()).Err() != nil {
		if time.Now().After(deadline) || proc.Exited() {
			log, _ := os.ReadFile(filepath.Join(dir, "redis.log"))
			t.Fatalf("private redis-server did not start: %s", log)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := c.Do(context.Background(), "ACL", "SETUSER", "gw", "on", ">gw-secret", "~*", "+@all").Err(); err != nil {
		t.Fatal(err)
	}
	return r
}

// TestRedisTLSUserAndSocket: a Redis that speaks only TLS, one reached by
// a unix socket, and an ACL user are each usable; a TLS set-up that can
// never work (the certificate's CA unknown, TLS to a Redis that speaks
// none) or a wrong ACL password stops the start, as a wrong password
// does: running every instance on its own fallbacks would hide it.
func TestRedisTLSUserAndSocket(t *testing.T) {
	r := startPrivateRedis(t)
	// A TLS handshake on a loaded machine (CI runs -race beside other
	// packages) may outlast the start's 500 ms check and the 200 ms dial:
	// a refusal must be told from a Redis that does not answer in time.
	defer func(d time.Duration) { redisStartCheck = d }(redisStartCheck)
	redisStartCheck = 10 * time.Second
	start := func(t *testing.T, set func(c *RedisConfig)) (*Main, error) {
		cfg := testConfig(t, backend{name: "sqlite"})
		cfg.Redis.Prefix, cfg.Redis.DialTimeout = "tls-test:", 5*time.Second
		set(&cfg.Redis)
		return NewMain(context.Background(), cfg)
	}
	works := map[string]func(c *RedisConfig){
		"tls": func(c *RedisConfig) { c.Addr, c.TLS, c.TLSCAFile = r.tlsAddr, true, r.caFile },
		"tls with an acl user": func(c *RedisConfig) {
			c.Addr, c.TLS, c.TLSCAFile, c.Username, c.Password = r.tlsAddr, true, r.caFile, "gw", "gw-secret"
		},
		"unix socket": func(c *RedisConfig) { c.Addr = r.socket },
	}
	for name, set := range works {
		t.Run(name, func(t *testing.T) {
			m, err := start(t, set)
			if err != nil {
				t.Fatalf("start: %v", err)
			}
			defer m.Close()
			ctx := context.Background()
			if err := m.Redis.Set(ctx, "tls-test:"+name, "x", time.Minute).Err(); err != nil {
				t.Fatalf("the gateway's Redis client: %v", err)
			}
		})
	}
	refused := map[string]struct {
		set  func(c *RedisConfig)
		want string
	}{
		"unknown ca":     {func(c *RedisConfig) { c.Addr, c.TLS = r.tlsAddr, true }, "redis.tls_ca_file"},
		"wrong password": {func(c *RedisConfig) { c.Addr, c.Username, c.Password = r.socket, "gw", "not-it" }, "redis.username"},
		"ca file empty": {func(c *RedisConfig) {
			c.Addr, c.TLS, c.TLSCAFile = r.tlsAddr, true, filepath.Join(t.TempDir(), "none.pem")
			_ = os.WriteFile(c.TLSCAFile, nil, 0o600)
		}, "no PEM certificate"},
		"ca file without tls": {func(c *RedisConfig) { c.Addr, c.TLSCAFile = r.tlsAddr, r.caFile }, "GATEWAY_REDIS_TLS"},
	}
	for name, tc := range refused {
		t.Run(name, func(t *testing.T) {
			m, err := start(t, tc.set)
			if err == nil {
				m.Close()
				t.Fatal("the gateway started")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to name %s", err, tc.want)
			}
		})
	}
}
