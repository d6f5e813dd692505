package wechatpay_test

import (
	"bytes"
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"paygateway/gateway"
	"paygateway/gateway/wechatpay"
	"paygateway/gateway/wechatpay/wxpaysim"
)

// verifierAt is the test keys' verifier with its clock at now.
func verifierAt(t *testing.T, k *wxpaysim.Keys, now time.Time) *wechatpay.Verifier {
	t.Helper()
	v, err := wechatpay.NewVerifier(wechatpay.NotifyConfig{APIv3Key: k.APIv3Key, PublicKeyID: k.PublicKeyID,
		PublicKey: k.PublicKey(), Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestTimestampFiveMinutesOffIsStale guards the window's bounds: a
// notification signed exactly five minutes before or after the gateway's
// clock is refused ESTALE, as wechatpay-go refuses it (|now - ts| >= 5
// min); a second inside either bound it is accepted. A window one second
// wider lets a captured notification be replayed after its nonce was
// forgotten by a memory sized for the window.
func TestTimestampFiveMinutesOffIsStale(t *testing.T) {
	k := fuzzKeys(t)
	n, err := k.PaymentNotification(expiryTx(k, "edge-ts"), wxpaysim.PublicKeyMode(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	sec, err := strconv.ParseInt(n.Header.Get("Wechatpay-Timestamp"), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	signed := time.Unix(sec, 0)
	for _, c := range []struct {
		clockOff time.Duration
		want     string
	}{
		{5 * time.Minute, gateway.CodeStale}, {-5 * time.Minute, gateway.CodeStale},
		{5*time.Minute - time.Second, ""}, {-5*time.Minute + time.Second, ""},
	} {
		_, err := verifierAt(t, k, signed.Add(c.clockOff)).Verify(context.Background(), n.Header, n.Body)
		if code := gateway.ErrorCode(err); err != nil && code != c.want || err == nil && c.want != "" {
			t.Errorf("clock %v from the timestamp: %v (%s), want %q", c.clockOff, err, code, c.want)
		}
	}
}

// TestNotificationIDMustFitTheLedger guards the envelope's id check: a
// signed notification without an id is refused EINVALID (stored with
// id "", every later one without an id would be answered 2xx as its
// duplicate, unrecorded), and so is one whose id is longer than the
// ledger's 128 (MariaDB's strict mode refuses the row: 503 at every
// redelivery). An id of 128 is accepted.
func TestNotificationIDMustFitTheLedger(t *testing.T) {
	k := fuzzKeys(t)
	v := fuzzVerifier(t, k)
	for _, c := range []struct {
		id   string
		want string
	}{
		{"", gateway.CodeInvalid}, {strings.Repeat("i", 129), gateway.CodeInvalid}, {strings.Repeat("i", 128), ""},
	} {
		n, err := k.PaymentNotification(expiryTx(k, "id-len"), wxpaysim.PublicKeyMode(), time.Now())
		if err != nil {
			t.Fatal(err)
		}
		n.Body = bytes.Replace(n.Body, []byte(`"id":"`+n.ID+`"`), []byte(`"id":"`+c.id+`"`), 1)
		if n, err = n.Resign(k, wxpaysim.PublicKeyMode(), time.Now()); err != nil {
			t.Fatal(err)
		}
		got, err := v.Verify(context.Background(), n.Header, n.Body)
		if code := gateway.ErrorCode(err); err != nil && code != c.want || err == nil && (c.want != "" || got.ID != c.id) {
			t.Errorf("id of %d characters: %v (%s), want %q", len(c.id), err, code, c.want)
		}
	}
}
