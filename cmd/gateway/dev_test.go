package main

import (
	"strings"
	"testing"

	"paygateway/gateway/wechatpay/wxpaysim"
)

// TestDevRefusesAMySQLDatabase: `make run` with a MySQL DSN left in the
// environment would run the simulators against that ledger (its stock
// jobs sent to the simulator and marked done), so it refuses to start;
// with no override it uses its own SQLite file.
func TestDevRefusesAMySQLDatabase(t *testing.T) {
	t.Chdir(t.TempDir())
	keys := &wxpaysim.Keys{MchID: "1900000001", AppID: "wxdev", APIv3Key: strings.Repeat("k", 32), PublicKeyID: "PUB_KEY_ID_1"}
	cfg, err := devConfig(keys)
	if err != nil || !strings.HasSuffix(cfg.Database.DSN, "gateway.db") {
		t.Fatalf("default dev config: dsn %q, %v", cfg.Database.DSN, err)
	}
	t.Setenv("GATEWAY_DATABASE_DSN", "mysql://root@tcp(127.0.0.1:3306)/prod")
	if _, err := devConfig(keys); err == nil || !strings.Contains(err.Error(), "GATEWAY_DATABASE_DSN") {
		t.Fatalf("dev with a MySQL database: err = %v, want a refusal naming GATEWAY_DATABASE_DSN", err)
	}
}
