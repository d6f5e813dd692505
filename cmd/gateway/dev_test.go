package main

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"testing"

	"paygateway/gateway/wechatpay/wxpaysim"
)

// TestDevStaysInItsSandbox: `make run` with a database left in the
// environment would run the simulators against that ledger (its stock
// jobs sent to the simulator and marked done), with another inventory
// would confirm stock for simulated payments, and on a public address
// would serve keys kept in plain files: it refuses to start; with no
// override it uses its own SQLite file on loopback.
func TestDevStaysInItsSandbox(t *testing.T) {
	t.Chdir(t.TempDir())
	keys := &wxpaysim.Keys{MchID: "1900000001", AppID: "wxdev", APIv3Key: strings.Repeat("k", 32), PublicKeyID: "PUB_KEY_ID_1"}
	cfg, err := devConfig(keys)
	if err != nil || !strings.HasSuffix(cfg.Database.DSN, "gateway.db") {
		t.Fatalf("default dev config: dsn %q, %v", cfg.Database.DSN, err)
	}
	for _, tc := range []struct{ env, value string }{
		{"GATEWAY_DATABASE_DSN", "mysql://root@tcp(127.0.0.1:3306)/prod"},
		{"GATEWAY_DATABASE_DSN", "/var/lib/gateway/ledger.db"}, // a production SQLite ledger
		{"GATEWAY_HTTP_ADDR", ":8080"},                         // every interface
		{"GATEWAY_HTTP_ADDR", "10.0.0.5:8080"},
		{"GATEWAY_INVENTORY_BASE_URL", "https://inventory.internal"},
		{"GATEWAY_WECHATPAY_BASE_URL", "https://api.mch.weixin.qq.com"},
		{"GATEWAY_REDIS_ADDR", "redis.internal:6379"},
		{"GATEWAY_HTTP_METRICS_ADDR", "0.0.0.0:9464"},
		{"GATEWAY_HTTP_NOTIFY_ADDR", ":8443"},
	} {
		t.Run(tc.env+"="+tc.value, func(t *testing.T) {
			t.Setenv(tc.env, tc.value)
			if _, err := devConfig(keys); err == nil || !strings.Contains(err.Error(), tc.env) {
				t.Fatalf("dev with %s=%s: err = %v, want a refusal naming %s", tc.env, tc.value, err, tc.env)
			}
		})
	}
	t.Setenv("GATEWAY_HTTP_ADDR", "localhost:8080")
	t.Setenv("GATEWAY_REDIS_ADDR", "127.0.0.1:6379")
	if _, err := devConfig(keys); err != nil {
		t.Fatalf("dev on localhost with a local Redis: %v", err)
	}
}

// TestDevNotificationsFollowTheAddress: GATEWAY_HTTP_ADDR may move `gateway
// dev` to another loopback port; the simulator's payment notifications and
// the refund notify_url the gateway sends follow it (they named
// 127.0.0.1:8080, where no gateway listened).
func TestDevNotificationsFollowTheAddress(t *testing.T) {
	t.Chdir(t.TempDir())
	keys := &wxpaysim.Keys{MchID: "1900000001", AppID: "wxdev", APIv3Key: strings.Repeat("k", 32), PublicKeyID: "PUB_KEY_ID_1"}
	t.Setenv("GATEWAY_HTTP_ADDR", "127.0.0.1:9090")
	cfg, err := devConfig(keys)
	if err != nil {
		t.Fatal(err)
	}
	if u := cfg.WechatPay.RefundNotifyURL; u != "http://127.0.0.1:9090/v1/wechatpay/notify/refund" {
		t.Fatalf("refund notify_url %q, want the gateway's address", u)
	}
	sim := devSimConfig(cfg)
	if sim.NotifyURL != "http://127.0.0.1:9090/v1/wechatpay/notify/payment" || sim.RefundNotifyURL != cfg.WechatPay.RefundNotifyURL {
		t.Fatalf("simulator notifies %q and %q, want the gateway's address", sim.NotifyURL, sim.RefundNotifyURL)
	}
}

// TestDevLogsAtTheLevelAsked: `GATEWAY_LOG_LEVEL=debug make run` logs at
// debug; `gateway dev` applied every GATEWAY_* variable but that one (its
// log stayed at info). The simulator's port is held here, so dev stops
// there, after taking its config.
func TestDevLogsAtTheLevelAsked(t *testing.T) {
	ln, err := net.Listen("tcp", wxpaysim.DefaultConfig().Addr)
	if err != nil {
		t.Skipf("the simulator's port is taken: %v", err)
	}
	defer ln.Close()
	defer slog.SetDefault(slog.Default())
	t.Chdir(t.TempDir())
	t.Setenv("GATEWAY_LOG_LEVEL", "debug")
	if err := dev(t.Context(), nil); err == nil {
		t.Fatal("dev started beside a simulator's port in use")
	}
	if !slog.Default().Enabled(context.Background(), slog.LevelDebug) {
		t.Fatal("GATEWAY_LOG_LEVEL=debug: dev logs at info")
	}
}

// TestDevRefusesArguments: `gateway dev` runs on its own config; a config
// file passed to it would be ignored without a word, so any argument is
// refused before anything starts.
func TestDevRefusesArguments(t *testing.T) {
	t.Chdir(t.TempDir())
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // were the arguments let through, the gateway would stop at once, not serve
	for _, args := range [][]string{{"--config", "prod.yaml"}, {"prod.yaml"}} {
		err := dev(ctx, args)
		if err == nil || !strings.Contains(err.Error(), "takes no arguments") {
			t.Errorf("gateway dev %v: %v, want the arguments refused", args, err)
		}
	}
}
