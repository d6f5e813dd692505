package stack

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"paygateway/gateway"
	"paygateway/gateway/wechatpay/wxpaysim"
)

// Merchant identity used by the harnesses.
const (
	MchID = "1900000109"
	AppID = "wxbench0000000001"
)

// Identity is the key material shared by a harness, its simulators and the
// gateway it starts, plus API keys for each role and the HS256 secret the
// refund API checks user tokens with.
type Identity struct {
	Keys      *wxpaysim.Keys
	KeysDir   string
	APIKeys   map[string]string // role → plain key
	JWTSecret []byte            // random per run; see UserToken
}

// NewIdentity generates WeChat Pay keys into dir and one API key per role.
func NewIdentity(dir string) (*Identity, error) {
	k, err := wxpaysim.GenerateKeys(MchID, AppID)
	if err != nil {
		return nil, err
	}
	if err := k.WriteDir(dir); err != nil {
		return nil, err
	}
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return nil, fmt.Errorf("jwt secret: %w", err)
	}
	id := &Identity{Keys: k, KeysDir: dir, APIKeys: map[string]string{}, JWTSecret: []byte(hex.EncodeToString(secret))}
	for _, role := range []string{"service", "finance", "ops"} {
		id.APIKeys[role] = role + "-" + gateway.NewToken()
	}
	return id, nil
}

// UserAudience is the aud claim of the user tokens UserToken mints.
const UserAudience = "paygateway-refunds"

// UserToken mints the user JWT the refund API expects from the business
// backend: HS256 over JWTSecret, claim openid, valid for ttl.
func (id *Identity) UserToken(openid string, ttl time.Duration) (string, error) {
	now := time.Now()
	claims := jwt.MapClaims{"openid": openid, "aud": UserAudience, "iat": now.Unix(), "exp": now.Add(ttl).Unix()}
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(id.JWTSecret)
	if err != nil {
		return "", fmt.Errorf("sign user token: %w", err)
	}
	return tok, nil
}

// Env returns the GATEWAY_* variables for database dsn, redis address
// (may be empty), the WeChat Pay simulator at wxURL and the inventory
// simulator at invURL (either may be empty). The refund API is on (JWT
// secret and merchant key) and the rate limits are off: a harness measures
// and tortures the gateway, it must not be throttled by it.
func (id *Identity) Env(dsn, redisAddr, wxURL, invURL string) []string {
	k := id.Keys
	env := []string{
		"GATEWAY_DATABASE_DSN=" + dsn,
		"GATEWAY_REDIS_ADDR=" + redisAddr,
		"GATEWAY_LOG_LEVEL=warn",
		"GATEWAY_WECHATPAY_MCHID=" + k.MchID,
		"GATEWAY_WECHATPAY_APPID=" + k.AppID,
		"GATEWAY_WECHATPAY_APIV3_KEY=" + k.APIv3Key,
		"GATEWAY_WECHATPAY_PUBLIC_KEY_FILE=" + filepath.Join(id.KeysDir, "platform_public_key.pem"),
		"GATEWAY_WECHATPAY_PUBLIC_KEY_ID=" + k.PublicKeyID,
		"GATEWAY_WECHATPAY_MERCHANT_SERIAL=" + k.MerchantSerial,
		"GATEWAY_WECHATPAY_MERCHANT_PRIVATE_KEY_FILE=" + filepath.Join(id.KeysDir, "merchant_private_key.pem"),
		"GATEWAY_REFUNDS_JWT_HS256_SECRET=" + string(id.JWTSecret),
		"GATEWAY_REFUNDS_JWT_AUDIENCE=" + UserAudience,
		"GATEWAY_RATE_LIMIT_REFUNDS_PER_MINUTE=0",
		"GATEWAY_RATE_LIMIT_REFUND_CALLS_PER_MINUTE=0",
		"GATEWAY_RATE_LIMIT_LEDGER_PER_MINUTE=0",
	}
	if wxURL != "" {
		env = append(env, "GATEWAY_WECHATPAY_BASE_URL="+wxURL)
	}
	if invURL != "" {
		env = append(env, "GATEWAY_INVENTORY_BASE_URL="+invURL)
	}
	var specs []string
	for role, key := range id.APIKeys {
		specs = append(specs, role+":"+role+":"+gateway.HashKey(key))
	}
	return append(env, "GATEWAY_API_KEYS="+strings.Join(specs, ","))
}
