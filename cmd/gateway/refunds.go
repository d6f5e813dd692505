package main

import (
	"context"
	"crypto/ecdsa"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"paygateway/gateway"
	"paygateway/gateway/wechatpay"
)

// RefundsConfig configures the refund API, its JWT checks and the janitor.
// The refund API is on when a JWT key and the merchant key are configured.
type RefundsConfig struct {
	JWT JWTConfig `yaml:"jwt"`
	// InFlight: how long a request holds its Idempotency-Key before a retry
	// may take over (default 30 s). KeyTTL: keys that made no refund
	// are kept this long (≥ 24 h); a key that made one is kept with it.
	InFlight time.Duration `yaml:"in_flight"`
	KeyTTL   time.Duration `yaml:"key_ttl"`
	// SafetyBuffer: a CREATED/UNKNOWN refund is left this long to its
	// request before the janitor queries it (default 2 min). Recheck: how
	// often a PROCESSING or ABNORMAL refund is queried (default 10 min).
	SafetyBuffer    time.Duration `yaml:"safety_buffer"`
	Recheck         time.Duration `yaml:"recheck"`
	CallTimeout     time.Duration `yaml:"call_timeout"`
	JanitorInterval time.Duration `yaml:"janitor_interval"`
	JanitorBatch    int           `yaml:"janitor_batch"`
	// OrderGap: the least time between two refund applications of one
	// order sent to WeChat Pay (WeChat refuses them closer than a minute;
	// default a minute plus call_timeout plus 5 s). A refund asked for
	// sooner is answered 202 and sent by the janitor once the gap ends.
	OrderGap time.Duration `yaml:"order_gap"`
}

// JWTConfig checks user tokens from the business backend: an HS256
// secret (inline or in a file) or an ES256 public key file, and during a
// rotation the backend's previous key (previous_*, of either kind).
type JWTConfig struct {
	HS256Secret        string `yaml:"hs256_secret" secret:"true"`
	HS256SecretFile    string `yaml:"hs256_secret_file"`
	ES256PublicKeyFile string `yaml:"es256_public_key_file"`
	// The key the backend signed with before the current one: its tokens
	// are taken until they expire (see README, "Rotating the user token key").
	PreviousHS256Secret        string        `yaml:"previous_hs256_secret" secret:"true"`
	PreviousHS256SecretFile    string        `yaml:"previous_hs256_secret_file"`
	PreviousES256PublicKeyFile string        `yaml:"previous_es256_public_key_file"`
	Issuer                     string        `yaml:"issuer"`
	Audience                   string        `yaml:"audience"`
	OpenIDClaim                string        `yaml:"openid_claim"`
	Leeway                     time.Duration `yaml:"leeway"`
	MaxLifetime                time.Duration `yaml:"max_lifetime"`
}

// configured: some key is set. A previous key alone counts, so that it is
// refused at start rather than ignored with the API off.
func (j JWTConfig) configured() bool {
	return j.HS256Secret != "" || j.HS256SecretFile != "" || j.ES256PublicKeyFile != "" ||
		j.PreviousHS256Secret != "" || j.PreviousHS256SecretFile != "" || j.PreviousES256PublicKeyFile != ""
}

// maxJWTLeeway bounds the clock skew allowed on a token's times: more
// would keep an expired token working.
const maxJWTLeeway = 2 * time.Minute

// maxJWTLifetime bounds refunds.jwt.max_lifetime: a user token that may
// last longer is a credential nobody can take back.
const maxJWTLifetime = 30 * 24 * time.Hour

// gatewayJWT loads the keys named by the config.
func (j JWTConfig) gatewayJWT() (gateway.JWTConfig, error) {
	out := gateway.JWTConfig{Issuer: j.Issuer, Audience: j.Audience, OpenIDClaim: j.OpenIDClaim, Leeway: j.Leeway,
		MaxLifetime: j.MaxLifetime}
	switch {
	case j.Audience == "":
		return out, errors.New("config: refunds.jwt.audience (GATEWAY_REFUNDS_JWT_AUDIENCE) is required: " +
			"without it any token signed with this key that carries an openid (one made for another API too) may ask for refunds")
	case j.MaxLifetime <= 0 || j.MaxLifetime > maxJWTLifetime:
		return out, fmt.Errorf("config: refunds.jwt.max_lifetime (GATEWAY_REFUNDS_JWT_MAX_LIFETIME) must be positive and at most %v", maxJWTLifetime)
	case j.Leeway < 0 || j.Leeway > maxJWTLeeway:
		return out, fmt.Errorf("config: refunds.jwt.leeway (GATEWAY_REFUNDS_JWT_LEEWAY) must be between 0 and %v", maxJWTLeeway)
	}
	// Compared as they are with each token's claims: every token refused.
	for _, f := range []struct{ value, name string }{{j.Issuer, "refunds.jwt.issuer (GATEWAY_REFUNDS_JWT_ISSUER)"},
		{j.Audience, "refunds.jwt.audience (GATEWAY_REFUNDS_JWT_AUDIENCE)"},
		{j.OpenIDClaim, "refunds.jwt.openid_claim (GATEWAY_REFUNDS_JWT_OPENID_CLAIM)"}} {
		if edged(f.value) {
			return out, fmt.Errorf("config: %s %s", f.name, edgedWhy)
		}
	}
	var err error
	if out.HS256Secret, out.ES256PublicKey, err = loadJWTKey(j.HS256Secret, j.HS256SecretFile, j.ES256PublicKeyFile, ""); err != nil {
		return out, err
	}
	out.PreviousHS256Secret, out.PreviousES256PublicKey, err = loadJWTKey(j.PreviousHS256Secret, j.PreviousHS256SecretFile,
		j.PreviousES256PublicKeyFile, "previous_")
	return out, err
}

// loadJWTKey reads one key's settings: an HS256 secret inline or in a
// file, or an ES256 public key file. prefix names them: "" for the
// current key, "previous_" for the previous one.
func loadJWTKey(secret, secretFile, publicKeyFile, prefix string) ([]byte, *ecdsa.PublicKey, error) {
	inline := fmt.Sprintf("refunds.jwt.%shs256_secret (GATEWAY_REFUNDS_JWT_%sHS256_SECRET)", prefix, strings.ToUpper(prefix))
	file := fmt.Sprintf("refunds.jwt.%shs256_secret_file (GATEWAY_REFUNDS_JWT_%sHS256_SECRET_FILE)", prefix, strings.ToUpper(prefix))
	switch {
	case secret != "" && secretFile != "":
		// The file would be ignored: a secret rotated in it never used,
		// every token signed with the new one refused.
		return nil, nil, fmt.Errorf("config: %s and %s are both set, and the file would be ignored: set one", inline, file)
	case edged(secret):
		// A secret file's are cut off (hs256_secret_file); here they would
		// be part of the key, and every token signed without them refused.
		return nil, nil, fmt.Errorf("config: %s begins or ends with white space (a newline from the file it was copied from?): "+
			"remove it, or use %shs256_secret_file", inline, prefix)
	case secretFile != "":
		b, err := readSecretFile(file, secretFile)
		if err != nil {
			return nil, nil, err
		}
		secret = strings.TrimSpace(string(b))
	}
	if publicKeyFile == "" {
		return []byte(secret), nil, nil
	}
	b, err := os.ReadFile(publicKeyFile)
	if err != nil {
		return nil, nil, fmt.Errorf("config: refunds.jwt.%ses256_public_key_file: %w", prefix, err)
	}
	pub, err := jwt.ParseECPublicKeyFromPEM(b)
	if err != nil {
		return nil, nil, fmt.Errorf("config: refunds.jwt.%ses256_public_key_file: %w", prefix, err)
	}
	return []byte(secret), pub, nil
}

// wireRefunds adds the refund notification route always, the janitor
// when the merchant key is configured, and the refund API when a JWT key
// is too. The janitor runs without the API: a refund made before the API
// was turned off still has its outcome asked for, its gap waited out and
// its amount given back when it fails; without it, it would stay reserved.
func (m *Main) wireRefunds(ctx context.Context) error {
	m.Deps.Routes = append(m.Deps.Routes, gateway.RefundNotifyRoute)
	api := m.Config.Refunds.JWT.configured()
	sc := m.refundConfig()
	if err := sc.Check(); err != nil {
		return fmt.Errorf("config: refunds.%w", err)
	}
	var auth *gateway.JWTAuth
	if api {
		// Checked even when the API stays off, so that a bad setting fails
		// now, not on the day the merchant key is added.
		var err error
		if auth, err = m.refundAuth(); err != nil {
			return err
		}
		for _, w := range sc.Warnings() {
			slog.Warn("config: refunds." + w)
		}
	}
	if m.Config.WechatPay.MerchantPrivateKeyFile == "" {
		if api {
			slog.Warn("refund API off: refunds.jwt is set but wechatpay.merchant_private_key_file is not; /v1/refunds answers 404")
		} else {
			slog.Info("refund API and janitor off: they need wechatpay.merchant_private_key_file (and refunds.jwt for the API)")
		}
		return nil
	}
	client := m.Wechat
	if client == nil {
		return errors.New("refunds: the WeChat Pay client is not configured")
	}
	svc := gateway.NewRefundService(sc, m.Store, wechatpay.RefundAdapter{Client: client}, m.Processor.Locker())
	m.Refunds = svc
	if api {
		m.Deps.Routes = append(m.Deps.Routes, gateway.RefundRoutes(svc, auth))
	} else {
		slog.Info("refund API off (refunds.jwt not set): /v1/refunds answers 404; the janitor settles refunds already made")
	}
	rc := m.Config.Refunds
	m.AddJob(func(ctx context.Context) {
		svc.RunJanitor(ctx, gateway.JanitorConfig{Interval: rc.JanitorInterval, Batch: rc.JanitorBatch})
	})
	return nil
}

// refundConfig is the refund service's settings.
func (m *Main) refundConfig() gateway.RefundConfig {
	rc := m.Config.Refunds
	return gateway.RefundConfig{InFlight: rc.InFlight, KeyTTL: rc.KeyTTL,
		SafetyBuffer: rc.SafetyBuffer, Recheck: rc.Recheck, CallTimeout: rc.CallTimeout, APITimeout: m.Config.HTTP.APITimeout,
		Calls: m.limiter, CallLimit: m.Config.RateLimit.refundCalls(), OrderGap: rc.OrderGap}
}

// refundAuth checks the refund API's token keys.
func (m *Main) refundAuth() (*gateway.JWTAuth, error) {
	jc, err := m.Config.Refunds.JWT.gatewayJWT()
	if err != nil {
		return nil, err
	}
	auth, err := gateway.NewJWTAuth(jc)
	if err != nil {
		return nil, fmt.Errorf("config: refunds.jwt: %w", err)
	}
	return auth, nil
}
