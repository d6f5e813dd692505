package main

import (
	"path/filepath"
	"testing"
	"time"

	"paygateway/gateway/wechatpay/wxpaysim"
	"paygateway/ledger/ledgertest"
)

// TestGatewayOnATLSDatabase: with GATEWAY_DATABASE_TLS_CA_FILE naming the
// CA of a MariaDB that takes TLS alone, the gateway migrates its database,
// records a payment and lets finance read it; a DSN with tls=skip-verify
// (any certificate taken) and a CA file beside a SQLite DSN stop the start.
func TestGatewayOnATLSDatabase(t *testing.T) {
	srv := ledgertest.StartTLSMariaDB(t)
	srv.Exec(t, "CREATE DATABASE gw")
	t.Setenv("GATEWAY_DATABASE_TLS_CA_FILE", srv.CAFile)
	loaded, err := Load("")
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t, backend{name: "sqlite"})
	cfg.Database.DSN, cfg.Database.TLSCAFile = "mysql://root@tcp("+srv.Addr+")/gw", loaded.Database.TLSCAFile
	m := startGateway(t, cfg)
	k, _ := testKeys(t)
	no := uniqueNo("tls")
	if status, body := post(t, m.URL()+paymentPath, mustNotification(k.PaymentNotification(paidTx(k, no, 100), wxpaysim.PublicKeyMode(), time.Now()))); status != 204 {
		t.Fatalf("payment: status=%d body=%v", status, body)
	}
	p := getJSON[struct {
		Items []struct {
			OutTradeNo string `json:"out_trade_no"`
		} `json:"items"`
	}](t, m.URL()+"/v1/ledger/payments?out_trade_no="+no, financeKey)
	if len(p.Items) != 1 || p.Items[0].OutTradeNo != no {
		t.Fatalf("payments = %+v, want %s", p.Items, no)
	}
	refused := map[string]func(c *Config){
		"tls=skip-verify": func(c *Config) {
			c.Database.DSN, c.Database.TLSCAFile = "mysql://root@tcp("+srv.Addr+")/gw?tls=skip-verify", ""
		},
		"a CA file beside SQLite": func(c *Config) {
			c.Database.DSN, c.Database.TLSCAFile = filepath.Join(t.TempDir(), "gw.db"), srv.CAFile
		},
	}
	for name, set := range refused {
		t.Run(name, func(t *testing.T) {
			c := testConfig(t, backend{name: "sqlite"})
			set(&c)
			startRefused(t, c, "tls")
		})
	}
}
