package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

const previousKeySeries = "gateway_jwt_previous_key_accepted_total"

// ecPublicKeyFile writes k's public key as PEM and returns its path and DER.
func ecPublicKeyFile(t *testing.T, k *ecdsa.PrivateKey) (string, []byte) {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "jwt_es256.pem")
	writeFile(t, path, string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})))
	return path, der
}

// userToken signs a user token for the test audience.
func userToken(t *testing.T, m jwt.SigningMethod, key any, openid string) string {
	t.Helper()
	now := time.Now()
	claims := jwt.MapClaims{"openid": openid, "aud": jwtAudience, "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}
	s, err := jwt.NewWithClaims(m, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestRefundTokenOfPreviousKey: the business backend moves its user
// tokens from the HS256 secret to an ES256 key; the gateway has the new
// key as current and the old secret as previous. A token of either is
// served over HTTP (POST /v1/refunds, GET /v1/refunds/{no}), and
// gateway_jwt_previous_key_accepted_total counts those of the old one
// only. A token of an unrelated key, alg none, or an HS256 token keyed
// with the ES256 public key's PEM or DER (algorithm confusion) is 401 and
// not counted. Before, only one key was taken: during the switch every
// user whose token was signed with the other got 401.
func TestRefundTokenOfPreviousKey(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			if err != nil {
				t.Fatal(err)
			}
			pubFile, der := ecPublicKeyFile(t, ec)
			e := startRefundEnv(t, b, func(c *Config) {
				c.Refunds.JWT.HS256Secret, c.Refunds.JWT.ES256PublicKeyFile = "", pubFile
				c.Refunds.JWT.PreviousHS256Secret = jwtSecret
			})
			openid := "o-rotate-" + b.tag()
			no := e.pay(t, openid, 500)
			old := token(t, openid) // HS256 with jwtSecret, now the previous key
			a := e.refund(t, old, "rotate-1", refundBody(no, 100))
			if a.status != 201 {
				t.Fatalf("POST /v1/refunds with a previous-key token: %d %s, want 201", a.status, a.body)
			}
			checkRefundMetrics(t, e.m.URL(), map[string]float64{previousKeySeries: 1})
			rno, _ := a.json(t)["out_refund_no"].(string)
			if g := e.getRefund(t, userToken(t, jwt.SigningMethodES256, ec, openid), rno); g.status != 200 {
				t.Fatalf("GET with a current-key token: %d %s, want 200", g.status, g.body)
			}
			checkRefundMetrics(t, e.m.URL(), map[string]float64{previousKeySeries: 1})
			if g := e.getRefund(t, old, rno); g.status != 200 {
				t.Fatalf("GET with a previous-key token: %d %s, want 200", g.status, g.body)
			}
			checkRefundMetrics(t, e.m.URL(), map[string]float64{previousKeySeries: 2})
			other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			pemBytes := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
			refused := map[string]string{
				"unrelated secret":            userToken(t, jwt.SigningMethodHS256, []byte("not-the-secret-not-the-secret-32"), openid),
				"unrelated ec key":            userToken(t, jwt.SigningMethodES256, other, openid),
				"alg none":                    userToken(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, openid),
				"hs256 keyed with the es pem": userToken(t, jwt.SigningMethodHS256, pemBytes, openid),
				"hs256 keyed with the es der": userToken(t, jwt.SigningMethodHS256, der, openid),
			}
			for name, tok := range refused {
				if g := e.getRefund(t, tok, rno); g.status != 401 {
					t.Errorf("%s: GET %d %s, want 401", name, g.status, g.body)
				}
			}
			checkRefundMetrics(t, e.m.URL(), map[string]float64{previousKeySeries: 2})
		})
	}
}

// TestPreviousJWTKeySettings: the previous key's settings are read as the
// current key's are (GATEWAY_REFUNDS_JWT_PREVIOUS_* variables; inline and
// file both set, an edged inline secret, an unreadable file refused and
// named without quoting it; an ES256 file that holds no key), and the
// start is refused for a previous key that is the current one, is too
// short, or comes without a current key (an ES256 one too, not taken as
// the API turned off).
func TestPreviousJWTKeySettings(t *testing.T) {
	dir := t.TempDir()
	oldSecret := strings.Repeat("o", 32)
	oldFile, curFile := filepath.Join(dir, "old"), filepath.Join(dir, "current")
	writeFile(t, oldFile, oldSecret+"\n")
	writeFile(t, curFile, jwtSecret+"\n")
	notPEM := filepath.Join(dir, "not.pem")
	writeFile(t, notPEM, "not a key\n")
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pubFile, _ := ecPublicKeyFile(t, ec)
	t.Run("environment", func(t *testing.T) {
		t.Setenv("GATEWAY_REFUNDS_JWT_PREVIOUS_HS256_SECRET", oldSecret)
		t.Setenv("GATEWAY_REFUNDS_JWT_PREVIOUS_HS256_SECRET_FILE", oldFile)
		t.Setenv("GATEWAY_REFUNDS_JWT_PREVIOUS_ES256_PUBLIC_KEY_FILE", "/run/secrets/old.pem")
		cfg, err := Load("")
		if err != nil {
			t.Fatal(err)
		}
		if j := cfg.Refunds.JWT; j.PreviousHS256Secret != oldSecret || j.PreviousHS256SecretFile != oldFile ||
			j.PreviousES256PublicKeyFile != "/run/secrets/old.pem" {
			t.Fatalf("refunds.jwt = %+v, want the previous_* variables in it", j)
		}
	})
	t.Run("from a file", func(t *testing.T) {
		j := JWTConfig{HS256Secret: jwtSecret, PreviousHS256SecretFile: oldFile, Audience: jwtAudience, MaxLifetime: time.Hour}
		out, err := j.gatewayJWT()
		if err != nil || string(out.PreviousHS256Secret) != oldSecret {
			t.Fatalf("previous secret %d bytes, err %v; want the file's, trimmed", len(out.PreviousHS256Secret), err)
		}
	})
	const s3cret = "s3cretS3cretS3cretS3cretS3cret42"
	cases := []struct {
		name, want string
		edit       func(*JWTConfig)
	}{
		{"inline and file", "GATEWAY_REFUNDS_JWT_PREVIOUS_HS256_SECRET_FILE", func(j *JWTConfig) {
			j.PreviousHS256Secret, j.PreviousHS256SecretFile = oldSecret, oldFile
		}},
		{"inline edged", "GATEWAY_REFUNDS_JWT_PREVIOUS_HS256_SECRET", func(j *JWTConfig) { j.PreviousHS256Secret = oldSecret + "\n" }},
		{"secret for its file", "GATEWAY_REFUNDS_JWT_PREVIOUS_HS256_SECRET_FILE", func(j *JWTConfig) { j.PreviousHS256SecretFile = s3cret }},
		{"es256 file missing", "refunds.jwt.previous_es256_public_key_file", func(j *JWTConfig) {
			j.PreviousES256PublicKeyFile = filepath.Join(dir, "missing.pem")
		}},
		{"the current secret", "previous key is the current one", func(j *JWTConfig) { j.PreviousHS256Secret = jwtSecret }},
		{"the current secret's file", "previous key is the current one", func(j *JWTConfig) {
			j.HS256Secret, j.HS256SecretFile, j.PreviousHS256Secret = "", curFile, jwtSecret
		}},
		{"too short", "previous HS256 secret must be at least 32 bytes", func(j *JWTConfig) { j.PreviousHS256Secret = "short" }},
		{"no current key", "without a current one", func(j *JWTConfig) { j.HS256Secret, j.PreviousHS256Secret = "", oldSecret }},
		{"es256 file not a key", "refunds.jwt.previous_es256_public_key_file", func(j *JWTConfig) { j.PreviousES256PublicKeyFile = notPEM }},
		{"no current key, previous es256", "without a current one", func(j *JWTConfig) {
			j.HS256Secret, j.PreviousES256PublicKeyFile = "", pubFile
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t, backend{name: "sqlite"})
			cfg.Refunds.JWT.HS256Secret, cfg.Refunds.JWT.Audience = jwtSecret, jwtAudience
			tc.edit(&cfg.Refunds.JWT)
			if err := startRefused(t, cfg, tc.want); strings.Contains(err.Error(), s3cret) || strings.Contains(err.Error(), oldSecret) {
				t.Fatalf("err = %v quotes a secret", err)
			}
		})
	}
}
