// Package wxpaysim is a protocol-faithful WeChat Pay API v3 simulator for
// tests and local development. It signs responses and notifications the way
// WeChat Pay does, verifies the merchant's request signatures, keeps orders and
// refunds with WeChat's idempotency rules, serves trade bills, and can inject
// faults (delays, 5xx, dropped connections, applied-then-lost answers, refund
// queries that lag the applications, refunds closed or held ABNORMAL until a
// person resolves them).
//
// In a test:
//
//	keys, _ := wxpaysim.GenerateKeys("1900000109", "wxd678efh567hg6787")
//	sim := wxpaysim.New(keys, wxpaysim.Options{NotifyURL: gatewayURL + "/v1/wechatpay/notify/payment"})
//	srv := httptest.NewServer(sim.Handler())
//	defer srv.Close()
//	defer sim.Close()
//	// point the gateway's client at srv.URL with keys.MerchantKey,
//	// keys.MerchantSerial, keys.PublicKeyID and keys.PublicKey()
//	tx, _ := sim.Pay(ctx, "T1", 100, "openid", false) // POSTs TRANSACTION.SUCCESS
//	sim.SetFaults(wxpaysim.Faults{ApplyThenTimeoutNext: 1})
//
// Paths: /v3/… is the WeChat Pay API, /sim/… the unsigned control API.
// The keys it generates are throwaway dev/test keys, never production keys.
package wxpaysim
