package wechatpay_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"paygateway/gateway"
	"paygateway/gateway/wechatpay"
	"paygateway/gateway/wechatpay/wxpaysim"
)

// TestPreviousAPIv3Key: a notification the current APIv3 key cannot open
// is opened with the previous one and marked so (for the metrics); one
// the current key opens is not marked; one neither opens is EDECRYPT. A
// previous key that is not 32 bytes, or is the current one, is refused.
// Before, the verifier held one key.
func TestPreviousAPIv3Key(t *testing.T) {
	k := fuzzKeys(t)
	current, unrelated := strings.Repeat("c", 32), strings.Repeat("u", 32)
	cfg := wechatpay.NotifyConfig{APIv3Key: current, PreviousAPIv3Key: k.APIv3Key,
		PublicKeyID: k.PublicKeyID, PublicKey: k.PublicKey()}
	v, err := wechatpay.NewVerifier(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		key      string
		previous bool
		code     string
	}{{current, false, ""}, {k.APIv3Key, true, ""}, {unrelated, false, gateway.CodeDecrypt}} {
		other := *k
		other.APIv3Key = c.key
		n, err := other.PaymentNotification(expiryTx(k, "rot-"+c.key[:1]), wxpaysim.PublicKeyMode(), time.Now())
		if err != nil {
			t.Fatal(err)
		}
		got, err := v.Parse(context.Background(), n.Header, n.Body)
		code := ""
		if err != nil {
			code = gateway.ErrorCode(err)
		}
		if code != c.code {
			t.Fatalf("key %s…: err %v, want code %q", c.key[:1], err, c.code)
		}
		if err == nil && got.PreviousKey != c.previous {
			t.Fatalf("key %s…: PreviousKey %v, want %v", c.key[:1], got.PreviousKey, c.previous)
		}
	}
	for _, bad := range []string{current, "short"} {
		cfg.PreviousAPIv3Key = bad
		if _, err := wechatpay.NewVerifier(cfg); err == nil {
			t.Fatalf("previous key %q accepted", bad)
		}
	}
}
