package wxpaysim_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wechatpay-apiv3/wechatpay-go/utils"

	"paygateway/gateway/wechatpay/wxpaysim"
)

func TestGenerateKeys(t *testing.T) {
	k := testKeys(t)
	if len(k.APIv3Key) != 32 {
		t.Fatalf("apiv3 key length=%d, want 32", len(k.APIv3Key))
	}
	if !strings.HasPrefix(k.PublicKeyID, "PUB_KEY_ID_") {
		t.Fatalf("public key id=%q", k.PublicKeyID)
	}
	if len(k.Certs) < 2 || k.Certs[0].Serial == k.Certs[1].Serial {
		t.Fatalf("want >= 2 distinct platform certs, got %d", len(k.Certs))
	}
	for _, c := range k.Certs {
		if got := utils.GetCertificateSerialNumber(*c.Cert); got != c.Serial {
			t.Fatalf("serial=%s, want %s", c.Serial, got)
		}
		if c.Key.N.BitLen() != 2048 {
			t.Fatalf("cert key bits=%d", c.Key.N.BitLen())
		}
	}
}

func TestKeysWriteLoadRoundTrip(t *testing.T) {
	k := testKeys(t)
	dir := filepath.Join(t.TempDir(), "keys")
	if err := k.WriteDir(dir); err != nil {
		t.Fatalf("WriteDir: %v", err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		info, _ := e.Info()
		if info.Mode().Perm() != 0o600 {
			t.Fatalf("%s mode=%v, want 0600", e.Name(), info.Mode().Perm())
		}
	}
	pub, err := utils.LoadPublicKeyWithPath(filepath.Join(dir, "platform_public_key.pem"))
	if err != nil || !pub.Equal(k.PublicKey()) {
		t.Fatalf("platform_public_key.pem: %v", err)
	}
	got, err := wxpaysim.LoadKeys(dir)
	if err != nil {
		t.Fatalf("LoadKeys: %v", err)
	}
	assertSameKeys(t, got, k)
	again, err := wxpaysim.LoadOrGenerateKeys(dir, "other", "other")
	if err != nil {
		t.Fatalf("LoadOrGenerateKeys: %v", err)
	}
	assertSameKeys(t, again, k)
}

func assertSameKeys(t *testing.T, got, want *wxpaysim.Keys) {
	t.Helper()
	if got.MchID != want.MchID || got.AppID != want.AppID || got.APIv3Key != want.APIv3Key ||
		got.PublicKeyID != want.PublicKeyID || got.MerchantSerial != want.MerchantSerial {
		t.Fatalf("ids differ: got %+v", got)
	}
	if !got.PlatformKey.Equal(want.PlatformKey) || !got.MerchantKey.Equal(want.MerchantKey) {
		t.Fatal("private keys differ")
	}
	if len(got.Certs) != len(want.Certs) {
		t.Fatalf("certs=%d, want %d", len(got.Certs), len(want.Certs))
	}
	for i := range got.Certs {
		if got.Certs[i].Serial != want.Certs[i].Serial || !got.Certs[i].Key.Equal(want.Certs[i].Key) ||
			!got.Certs[i].Cert.Equal(want.Certs[i].Cert) {
			t.Fatalf("cert %d differs", i)
		}
	}
}

func TestLoadOrGenerateKeysGenerates(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "new")
	k, err := wxpaysim.LoadOrGenerateKeys(dir, testMchID, testAppID)
	if err != nil {
		t.Fatalf("LoadOrGenerateKeys: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "keys.json")); err != nil {
		t.Fatalf("keys.json not written: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "platform_cert_"+k.Certs[1].Serial+".pem")); err != nil {
		t.Fatalf("cert not written: %v", err)
	}
}
