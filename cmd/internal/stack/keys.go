package stack

import (
	"path/filepath"
	"strings"

	"paygateway/gateway"
	"paygateway/gateway/wechatpay/wxpaysim"
)

// Merchant identity used by the harnesses.
const (
	MchID = "1900000109"
	AppID = "wxbench0000000001"
)

// Identity is the key material shared by a harness, its simulators and the
// gateway it starts, plus API keys for each role.
type Identity struct {
	Keys    *wxpaysim.Keys
	KeysDir string
	APIKeys map[string]string // role → plain key
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
	id := &Identity{Keys: k, KeysDir: dir, APIKeys: map[string]string{}}
	for _, role := range []string{"service", "finance", "ops"} {
		id.APIKeys[role] = role + "-" + gateway.NewToken()
	}
	return id, nil
}

// Env returns the GATEWAY_* variables for database dsn, redis address
// (may be empty), the WeChat Pay simulator at wxURL and the inventory
// simulator at invURL (either may be empty).
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
	}
	if wxURL != "" {
		env = append(env, "GATEWAY_WECHATPAY_BASE_URL="+wxURL)
	}
	if invURL != "" {
		// The inventory section arrives with the outbox branch; until then the
		// gateway ignores these variables.
		env = append(env, "GATEWAY_INVENTORY_BASE_URL="+invURL, "GATEWAY_INVENTORY_URL="+invURL)
	}
	var specs []string
	for role, key := range id.APIKeys {
		specs = append(specs, role+":"+role+":"+gateway.HashKey(key))
	}
	return append(env, "GATEWAY_API_KEYS="+strings.Join(specs, ","))
}
