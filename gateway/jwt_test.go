package gateway_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/golang-jwt/jwt/v5"

	"paygateway/gateway"
)

func TestJWTAuth(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	otherEC, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	exp := time.Now().Add(time.Hour).Unix()
	sign := func(m jwt.SigningMethod, key any, claims jwt.MapClaims) string {
		s, err := jwt.NewWithClaims(m, claims).SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	hs := gateway.JWTConfig{HS256Secret: secret, Issuer: "biz", Audience: "refunds"}
	es := gateway.JWTConfig{ES256PublicKey: &ecKey.PublicKey}
	good := jwt.MapClaims{"openid": "o1", "exp": exp, "iss": "biz", "aud": "refunds"}
	now := time.Now().Unix()
	bounded := gateway.JWTConfig{HS256Secret: secret, Audience: "refunds", MaxLifetime: 24 * time.Hour}
	cases := []tokenCase{
		{"hs256 valid", hs, sign(jwt.SigningMethodHS256, secret, good), true},
		{"hs256 wrong secret", hs, sign(jwt.SigningMethodHS256, []byte("x123456789abcdef0123456789abcdef"), good), false},
		{"hs256 no exp", hs, sign(jwt.SigningMethodHS256, secret, jwt.MapClaims{"openid": "o1", "iss": "biz", "aud": "refunds"}), false},
		{"hs256 expired", hs, sign(jwt.SigningMethodHS256, secret, jwt.MapClaims{"openid": "o1", "exp": time.Now().Add(-time.Minute).Unix(), "iss": "biz", "aud": "refunds"}), false},
		{"hs256 wrong issuer", hs, sign(jwt.SigningMethodHS256, secret, jwt.MapClaims{"openid": "o1", "exp": exp, "iss": "evil", "aud": "refunds"}), false},
		{"hs256 wrong audience", hs, sign(jwt.SigningMethodHS256, secret, jwt.MapClaims{"openid": "o1", "exp": exp, "iss": "biz", "aud": "x"}), false},
		{"openid with a trailing space", hs, sign(jwt.SigningMethodHS256, secret, jwt.MapClaims{"openid": "o1 ", "exp": exp, "iss": "biz", "aud": "refunds"}), false},
		{"hs256 no openid", hs, sign(jwt.SigningMethodHS256, secret, jwt.MapClaims{"exp": exp, "iss": "biz", "aud": "refunds"}), false},
		{"alg none", hs, sign(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, good), false},
		{"bounded lifetime, a day", bounded, sign(jwt.SigningMethodHS256, secret, jwt.MapClaims{"openid": "o1", "iat": now, "exp": now + 86400, "aud": "refunds"}), true},
		{"bounded lifetime, a day and a minute", bounded, sign(jwt.SigningMethodHS256, secret, jwt.MapClaims{"openid": "o1", "iat": now, "exp": now + 86400 + 60, "aud": "refunds"}), false},
		{"bounded lifetime, a day issued ten years ahead", bounded, sign(jwt.SigningMethodHS256, secret, jwt.MapClaims{"openid": "o1", "iat": now + 10*365*86400, "exp": now + 10*365*86400 + 3600, "aud": "refunds"}), false},
		{"hs512 with the hs256 secret", hs, sign(jwt.SigningMethodHS512, secret, good), false},
		{"bounded lifetime, ten years", bounded, sign(jwt.SigningMethodHS256, secret, jwt.MapClaims{"openid": "o1", "iat": now, "exp": now + 10*365*86400, "aud": "refunds"}), false},
		{"bounded lifetime, no iat", bounded, sign(jwt.SigningMethodHS256, secret, jwt.MapClaims{"openid": "o1", "exp": exp, "aud": "refunds"}), false},
		{"es256 valid", es, sign(jwt.SigningMethodES256, ecKey, good), true},
		{"es256 other key", es, sign(jwt.SigningMethodES256, otherEC, good), false},
		{"es256 config, hs256 token", es, sign(jwt.SigningMethodHS256, secret, good), false},
	}
	checkTokens(t, cases)
	for _, bad := range []gateway.JWTConfig{{}, {HS256Secret: []byte("short")}, {HS256Secret: secret, ES256PublicKey: &ecKey.PublicKey}} {
		if _, err := gateway.NewJWTAuth(bad); err == nil {
			t.Errorf("NewJWTAuth(%+v) accepted a bad config", bad)
		}
	}
}

// TestES256KeyMustBeOnP256: a key on another curve is refused at start:
// P-224 is weaker than ES256 means, and on P-384 or P-521 every token's
// signature has the wrong length, so every refund request would get 401.
func TestES256KeyMustBeOnP256(t *testing.T) {
	for _, curve := range []elliptic.Curve{elliptic.P224(), elliptic.P384(), elliptic.P521()} {
		k, err := ecdsa.GenerateKey(curve, rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := gateway.NewJWTAuth(gateway.JWTConfig{ES256PublicKey: &k.PublicKey, Audience: "refunds"}); err == nil {
			t.Errorf("a %s key was taken for ES256", curve.Params().Name)
		}
	}
}

// TestHS256SecretIsNoPublicKey: a public key put where the HS256 secret
// goes (the backend's ES256 key written into the mounted secret file)
// would let anyone who has that public key sign HS256 tokens with its
// text, for any openid: the start is refused.
func TestHS256SecretIsNoPublicKey(t *testing.T) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pub := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	for name, secret := range map[string][]byte{"pem": pub, "pem trimmed": []byte(strings.TrimSpace(string(pub)))} {
		auth, err := gateway.NewJWTAuth(gateway.JWTConfig{HS256Secret: secret, Audience: "refunds"})
		if err == nil {
			tok, _ := gateway.SignDevToken(secret, "o-anyone", "", "refunds", time.Hour)
			openid, verr := auth.OpenID(tok)
			t.Fatalf("%s: a PEM public key was taken for the HS256 secret (a token signed with it gives %q, %v)", name, openid, verr)
		}
		if !strings.Contains(err.Error(), "es256_public_key_file") {
			t.Errorf("%s: refusal does not point at es256_public_key_file: %v", name, err)
		}
	}
}

// TestJWTSchemeIsCaseInsensitive: the Authorization scheme is a
// case-insensitive token (RFC 7235, 2.1), as the API keys' "Bearer" is
// read: a client sending "bearer <jwt>" is let through. Before, its valid
// token was answered 401 "missing bearer token". Several spaces may
// separate the scheme from the token (RFC 9110 11.1).
func TestJWTSchemeIsCaseInsensitive(t *testing.T) {
	gin.SetMode(gin.TestMode)
	secret := []byte("0123456789abcdef0123456789abcdef")
	a, err := gateway.NewJWTAuth(gateway.JWTConfig{HS256Secret: secret})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := gateway.SignDevToken(secret, "o-case", "", "", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	r := gin.New()
	r.GET("/me", a.Require(nil), func(c *gin.Context) { c.String(http.StatusOK, gateway.CurrentOpenID(c)) })
	for _, h := range []string{"Bearer " + tok, "bearer " + tok, "BEARER " + tok, "Bearer   " + tok} {
		req := httptest.NewRequest("GET", "/me", nil)
		req.Header.Set("Authorization", h)
		w := httptest.NewRecorder()
		r.ServeHTTP(w, req)
		if w.Code != http.StatusOK || w.Body.String() != "o-case" {
			t.Errorf("Authorization %.7q…: %d %s, want 200 o-case", h, w.Code, w.Body)
		}
	}
}

// tokenCase is one token checked under one config: ok when it must be
// taken, with openid o1.
type tokenCase struct {
	name  string
	cfg   gateway.JWTConfig
	token string
	ok    bool
}

// checkTokens runs each case as a subtest.
func checkTokens(t *testing.T, cases []tokenCase) {
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a, err := gateway.NewJWTAuth(tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			openid, err := a.OpenID(tc.token)
			if tc.ok != (err == nil) || (tc.ok && openid != "o1") {
				t.Fatalf("openid=%q err=%v, want ok=%v", openid, err, tc.ok)
			}
		})
	}
}
