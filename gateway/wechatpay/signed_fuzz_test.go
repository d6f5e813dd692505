package wechatpay_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"paygateway/gateway"
	"paygateway/gateway/wechatpay/wxpaysim"
)

// FuzzSignedNotification reaches what FuzzParse cannot: a mutated input
// never carries a valid signature there, so the envelope, decryption and
// resource code behind the signature check only ever see its seeds. Here
// every input is signed genuinely. An arbitrary body so signed must be
// refused with a coded error or accepted with exactly the id and event
// type it holds; an arbitrary resource plaintext sealed in a genuine
// notification must come out byte for byte.
func FuzzSignedNotification(f *testing.F) {
	k := fuzzKeys(f)
	v := fuzzVerifier(f, k)
	for _, s := range fuzzSeeds(f, k, time.Now()) {
		f.Add(s.body, []byte(`{"out_trade_no":"fuzz000001","trade_state":"SUCCESS"}`))
	}
	f.Add([]byte(`{"id":"x","event_type":"E","resource":{"algorithm":"AEAD_AES_256_GCM","ciphertext":"!!"}}`), []byte{})
	f.Add([]byte(`{"id":"`+string(bytes.Repeat([]byte("a"), 129))+`","event_type":"E"}`), []byte("\x00\xff"))
	f.Fuzz(func(t *testing.T, body, plaintext []byte) {
		now := time.Now()
		signed, err := wxpaysim.Notification{Body: body}.Resign(k, wxpaysim.PublicKeyMode(), now)
		if err != nil {
			t.Fatal(err)
		}
		n, err := v.Parse(context.Background(), signed.Header, body)
		var ge *gateway.Error
		switch {
		case err != nil && (!errors.As(err, &ge) || ge.Code == ""):
			t.Fatalf("refusal without a code: %v", err)
		case err == nil:
			var env struct {
				ID        string `json:"id"`
				EventType string `json:"event_type"`
			}
			if jerr := json.Unmarshal(body, &env); jerr != nil || env.ID != n.ID || env.EventType != n.EventType || n.ID == "" {
				t.Fatalf("accepted %q as id %q, event %q (body decodes: %v)", body, n.ID, n.EventType, jerr)
			}
		}
		sealed, err := k.NewNotification("fz-1", "TRANSACTION.SUCCESS", "transaction", plaintext, wxpaysim.PublicKeyMode(), now)
		if err != nil {
			t.Fatal(err)
		}
		n, err = v.Parse(context.Background(), sealed.Header, sealed.Body)
		if err != nil || n.ID != "fz-1" || !bytes.Equal(n.Plaintext, plaintext) {
			t.Fatalf("genuine notification sealing %q: %+v, %v", plaintext, n, err)
		}
	})
}
