package gateway_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/golang-jwt/jwt/v5"
	dto "github.com/prometheus/client_model/go"

	"paygateway/gateway"
)

// rotationKeys are an old and a new HS256 secret and ES256 key, and an
// unrelated one of each.
type rotationKeys struct {
	oldHS, newHS, otherHS []byte
	oldEC, newEC, otherEC *ecdsa.PrivateKey
}

func newRotationKeys(t *testing.T) rotationKeys {
	t.Helper()
	ec := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	return rotationKeys{oldHS: []byte("old-secret-0123456789abcdef-0123"), newHS: []byte("new-secret-0123456789abcdef-0123"),
		otherHS: []byte("not-the-secret-0123456789abcdef-"), oldEC: ec(), newEC: ec(), otherEC: ec()}
}

// publicKeyBytes are an EC public key's PEM and DER: what an attacker
// who has the published key would use as an HMAC secret.
func publicKeyBytes(t *testing.T, k *ecdsa.PrivateKey) map[string][]byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return map[string][]byte{"der": der, "pem": pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})}
}

func signed(t *testing.T, m jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(m, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestJWTPreviousKey: during a rotation a token verifies under the current
// key or the previous one, of the same kind or the other (HS256 → ES256),
// with every check the current key has; a token of an unrelated key, of
// alg none, or an HS256 token whose HMAC secret is the ES256 public key's
// PEM or DER (algorithm confusion) is refused. Before, only the current
// key was taken: every user holding a token of the other key got 401 until
// the backend and every instance had switched.
func TestJWTPreviousKey(t *testing.T) {
	k := newRotationKeys(t)
	now := time.Now().Unix()
	good := jwt.MapClaims{"openid": "o1", "iat": now, "exp": now + 3600, "iss": "biz", "aud": "refunds"}
	with := func(edit func(jwt.MapClaims)) jwt.MapClaims {
		c := jwt.MapClaims{}
		for n, v := range good {
			c[n] = v
		}
		edit(c)
		return c
	}
	base := gateway.JWTConfig{Issuer: "biz", Audience: "refunds", MaxLifetime: 24 * time.Hour}
	hsToHS, esToHS, hsToES := base, base, base
	hsToHS.HS256Secret, hsToHS.PreviousHS256Secret = k.newHS, k.oldHS
	esToHS.HS256Secret, esToHS.PreviousES256PublicKey = k.newHS, &k.oldEC.PublicKey
	hsToES.ES256PublicKey, hsToES.PreviousHS256Secret = &k.newEC.PublicKey, k.oldHS
	hs, es := jwt.SigningMethodHS256, jwt.SigningMethodES256
	cases := []tokenCase{
		{"hs→hs: current", hsToHS, signed(t, hs, k.newHS, good), true},
		{"hs→hs: previous", hsToHS, signed(t, hs, k.oldHS, good), true},
		{"hs→hs: unrelated secret", hsToHS, signed(t, hs, k.otherHS, good), false},
		{"hs→hs: previous, hs512", hsToHS, signed(t, jwt.SigningMethodHS512, k.oldHS, good), false},
		{"hs→hs: alg none", hsToHS, signed(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, good), false},
		{"hs→hs: previous, expired", hsToHS, signed(t, hs, k.oldHS, with(func(c jwt.MapClaims) { c["iat"], c["exp"] = now-7200, now-60 })), false},
		{"hs→hs: previous, no exp", hsToHS, signed(t, hs, k.oldHS, with(func(c jwt.MapClaims) { delete(c, "exp") })), false},
		{"hs→hs: previous, no iat", hsToHS, signed(t, hs, k.oldHS, with(func(c jwt.MapClaims) { delete(c, "iat") })), false},
		{"hs→hs: previous, iat ahead", hsToHS, signed(t, hs, k.oldHS, with(func(c jwt.MapClaims) { c["iat"], c["exp"] = now+3600, now+7200 })), false},
		{"hs→hs: previous, a year's lifetime", hsToHS, signed(t, hs, k.oldHS, with(func(c jwt.MapClaims) { c["exp"] = now + 365*86400 })), false},
		{"hs→hs: previous, wrong issuer", hsToHS, signed(t, hs, k.oldHS, with(func(c jwt.MapClaims) { c["iss"] = "evil" })), false},
		{"hs→hs: previous, wrong audience", hsToHS, signed(t, hs, k.oldHS, with(func(c jwt.MapClaims) { c["aud"] = "other" })), false},
		{"hs→hs: previous, no openid", hsToHS, signed(t, hs, k.oldHS, with(func(c jwt.MapClaims) { delete(c, "openid") })), false},
		{"hs→hs: previous, malformed openid", hsToHS, signed(t, hs, k.oldHS, with(func(c jwt.MapClaims) { c["openid"] = "o1 " })), false},
		{"es→hs: current hs", esToHS, signed(t, hs, k.newHS, good), true},
		{"es→hs: previous es", esToHS, signed(t, es, k.oldEC, good), true},
		{"es→hs: unrelated ec key", esToHS, signed(t, es, k.otherEC, good), false},
		{"es→hs: previous es, expired", esToHS, signed(t, es, k.oldEC, with(func(c jwt.MapClaims) { c["iat"], c["exp"] = now-7200, now-60 })), false},
		{"es→hs: alg none", esToHS, signed(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, good), false},
		{"hs→es: current es", hsToES, signed(t, es, k.newEC, good), true},
		{"hs→es: previous hs", hsToES, signed(t, hs, k.oldHS, good), true},
		{"hs→es: unrelated secret", hsToES, signed(t, hs, k.otherHS, good), false},
		{"hs→es: unrelated ec key", hsToES, signed(t, es, k.otherEC, good), false},
		{"hs→es: es384", hsToES, signed(t, jwt.SigningMethodES384, mustP384(t), good), false},
		{"hs→es: alg none", hsToES, signed(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, good), false},
	}
	// Algorithm confusion: HS256 tokens keyed with the EC public key's
	// bytes, whichever of the two keys is the EC one.
	for form, b := range publicKeyBytes(t, k.newEC) {
		cases = append(cases, tokenCase{"hs→es: hs256 keyed with the current es key's " + form, hsToES, signed(t, hs, b, good), false})
	}
	for form, b := range publicKeyBytes(t, k.oldEC) {
		cases = append(cases, tokenCase{"es→hs: hs256 keyed with the previous es key's " + form, esToHS, signed(t, hs, b, good), false})
	}
	checkTokens(t, cases)
	// A current-key token refused for its claims is not tried under the
	// previous key: the log gives its own reason, not the previous key's
	// "signature is invalid", which would send on-call after the keys.
	a, err := gateway.NewJWTAuth(hsToHS)
	if err != nil {
		t.Fatal(err)
	}
	expired := signed(t, hs, k.newHS, with(func(c jwt.MapClaims) { c["iat"], c["exp"] = now-7200, now-60 }))
	if _, err := a.OpenID(expired); !errors.Is(err, jwt.ErrTokenExpired) {
		t.Fatalf("expired current-key token: err %v, want it refused as expired", err)
	}
	// The openid is read from refunds.jwt.openid_claim whichever key took
	// the token, not from a claim of that name the backend does not mean.
	uid := hsToHS
	uid.OpenIDClaim = "uid"
	if a, err = gateway.NewJWTAuth(uid); err != nil {
		t.Fatal(err)
	}
	for name, key := range map[string][]byte{"current": k.newHS, "previous": k.oldHS} {
		tok := signed(t, hs, key, with(func(c jwt.MapClaims) { c["uid"], c["openid"] = "o-uid", "o-other" }))
		if openid, err := a.OpenID(tok); err != nil || openid != "o-uid" {
			t.Errorf("%s key, openid_claim uid: openid %q, err %v; want o-uid", name, openid, err)
		}
	}
}

func mustP384(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestJWTPreviousKeyRefused: a previous key is checked as the current one
// is (32 bytes at least, no PEM, P-256), and refused when it is the
// current key, when it is of both kinds, or when there is no current key.
func TestJWTPreviousKeyRefused(t *testing.T) {
	k := newRotationKeys(t)
	p384 := mustP384(t)
	same := k.newEC.PublicKey // an equal key, not the same pointer
	pemKey := publicKeyBytes(t, k.oldEC)["pem"]
	cases := map[string]gateway.JWTConfig{
		"previous without a current key":    {PreviousHS256Secret: k.oldHS},
		"previous es without a current key": {PreviousES256PublicKey: &k.oldEC.PublicKey},
		"previous secret is the current":    {HS256Secret: k.newHS, PreviousHS256Secret: []byte(string(k.newHS))},
		"previous es key is the current":    {ES256PublicKey: &k.newEC.PublicKey, PreviousES256PublicKey: &same},
		"previous of both kinds":            {HS256Secret: k.newHS, PreviousHS256Secret: k.oldHS, PreviousES256PublicKey: &k.oldEC.PublicKey},
		"previous secret too short":         {HS256Secret: k.newHS, PreviousHS256Secret: []byte("short")},
		"previous secret of 31 bytes":       {HS256Secret: k.newHS, PreviousHS256Secret: k.oldHS[:31]},
		"current secret of 31 bytes":        {HS256Secret: k.newHS[:31], PreviousHS256Secret: k.oldHS},
		"previous secret is a PEM key":      {ES256PublicKey: &k.newEC.PublicKey, PreviousHS256Secret: pemKey},
		"previous es key on P-384":          {HS256Secret: k.newHS, PreviousES256PublicKey: &p384.PublicKey},
	}
	for name, cfg := range cases {
		t.Run(name, func(t *testing.T) {
			cfg.Audience = "refunds"
			if _, err := gateway.NewJWTAuth(cfg); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

// TestJWTPreviousKeyCounted: gateway_jwt_previous_key_accepted_total
// moves for each request let through under the previous key, and for
// nothing else (current key, refused tokens): flat, it says the previous
// key can go.
func TestJWTPreviousKeyCounted(t *testing.T) {
	gin.SetMode(gin.TestMode)
	k := newRotationKeys(t)
	a, err := gateway.NewJWTAuth(gateway.JWTConfig{ES256PublicKey: &k.newEC.PublicKey, PreviousHS256Secret: k.oldHS, Audience: "refunds"})
	if err != nil {
		t.Fatal(err)
	}
	m := gateway.NewMetrics()
	r := gin.New()
	r.GET("/me", a.Require(m), func(c *gin.Context) { c.String(http.StatusOK, gateway.CurrentOpenID(c)) })
	now := time.Now().Unix()
	claims := jwt.MapClaims{"openid": "o1", "iat": now, "exp": now + 3600, "aud": "refunds"}
	expired := jwt.MapClaims{"openid": "o1", "iat": now - 7200, "exp": now - 60, "aud": "refunds"}
	steps := []struct {
		name   string
		token  string
		status int
		count  float64
	}{
		{"current", signed(t, jwt.SigningMethodES256, k.newEC, claims), 200, 0},
		{"previous", signed(t, jwt.SigningMethodHS256, k.oldHS, claims), 200, 1},
		{"unrelated", signed(t, jwt.SigningMethodHS256, k.otherHS, claims), 401, 1},
		{"previous, expired", signed(t, jwt.SigningMethodHS256, k.oldHS, expired), 401, 1},
		{"current again", signed(t, jwt.SigningMethodES256, k.newEC, claims), 200, 1},
		{"previous again", signed(t, jwt.SigningMethodHS256, k.oldHS, claims), 200, 2},
	}
	for _, s := range steps {
		req := httptest.NewRequest("GET", "/me", nil)
		req.Header.Set("Authorization", "Bearer "+s.token)
		w := httptest.NewRecorder()
		r.ServeHTTP(w, req)
		if w.Code != s.status {
			t.Fatalf("%s: status=%d, want %d", s.name, w.Code, s.status)
		}
		var d dto.Metric
		if err := m.JWTPrevious.Write(&d); err != nil {
			t.Fatal(err)
		}
		if got := d.GetCounter().GetValue(); got != s.count {
			t.Fatalf("%s: gateway_jwt_previous_key_accepted_total = %v, want %v", s.name, got, s.count)
		}
	}
}
