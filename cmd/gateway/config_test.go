package main

import (
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestShippedConfigParses(t *testing.T) {
	cfg, err := Load("../../configs/gateway.yaml")
	if err != nil {
		t.Fatalf("configs/gateway.yaml: %v", err)
	}
	if cfg.HTTP.Addr != ":8080" || cfg.Redis.PoolTimeout != 100*time.Millisecond {
		t.Fatalf("unexpected values: %+v", cfg.HTTP)
	}
}

func TestEnvironmentOverridesEveryField(t *testing.T) {
	env := map[string]string{
		"GATEWAY_HTTP_ADDR":                     "127.0.0.1:9999",
		"GATEWAY_DATABASE_DSN":                  "mysql://u@tcp(db:3306)/gw",
		"GATEWAY_REDIS_ADDR":                    "redis:6379",
		"GATEWAY_REDIS_POOL_TIMEOUT":            "50ms",
		"GATEWAY_WECHATPAY_MCHID":               "123",
		"GATEWAY_WECHATPAY_APPID":               "wxapp",
		"GATEWAY_WECHATPAY_APIV3_KEY":           strings.Repeat("a", 32),
		"GATEWAY_WECHATPAY_PREVIOUS_APIV3_KEY":  strings.Repeat("p", 32),
		"GATEWAY_WECHATPAY_PUBLIC_KEY_FILE":     "/k.pem",
		"GATEWAY_WECHATPAY_PUBLIC_KEY_ID":       "PUB_KEY_ID_1",
		"GATEWAY_WECHATPAY_PLATFORM_CERT_FILES": "/a.pem, /b.pem",
		"GATEWAY_API_KEYS":                      "a:finance:x,b:ops:y",
		"GATEWAY_HTTP_MAX_BODY_BYTES":           "20480",
	}
	for k, v := range env {
		t.Setenv(k, v)
	}
	cfg, err := Load("")
	if err != nil {
		t.Fatal(err)
	}
	w := cfg.WechatPay
	if cfg.HTTP.Addr != "127.0.0.1:9999" || cfg.Database.DSN != env["GATEWAY_DATABASE_DSN"] ||
		cfg.Redis.Addr != "redis:6379" || cfg.Redis.PoolTimeout != 50*time.Millisecond ||
		w.MchID != "123" || w.AppID != "wxapp" || w.PublicKeyID != "PUB_KEY_ID_1" || w.PreviousAPIv3Key != strings.Repeat("p", 32) ||
		len(w.PlatformCertFiles) != 2 || w.PlatformCertFiles[1] != "/b.pem" ||
		len(cfg.Auth.APIKeys) != 2 || cfg.HTTP.MaxBodyBytes != 20480 {
		t.Fatalf("env not applied: %+v", cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("validate: %v", err)
	}
}

func TestInvalidConfigNamesTheField(t *testing.T) {
	base := func() Config {
		c := DefaultConfig()
		c.WechatPay.MchID, c.WechatPay.AppID = "1", "wx"
		c.WechatPay.APIv3Key = strings.Repeat("a", 32)
		c.WechatPay.PublicKeyFile, c.WechatPay.PublicKeyID = "/k", "PUB_KEY_ID_1"
		return c
	}
	cases := []struct {
		name  string
		edit  func(*Config)
		field string
	}{
		{"short apiv3 key", func(c *Config) { c.WechatPay.APIv3Key = "short" }, "GATEWAY_WECHATPAY_APIV3_KEY"},
		{"short previous apiv3 key", func(c *Config) { c.WechatPay.PreviousAPIv3Key = "short" }, "GATEWAY_WECHATPAY_PREVIOUS_APIV3_KEY"},
		// Nothing to fall back on: a rotation half set up.
		{"previous apiv3 key the current one", func(c *Config) { c.WechatPay.PreviousAPIv3Key = c.WechatPay.APIv3Key },
			"GATEWAY_WECHATPAY_PREVIOUS_APIV3_KEY"},
		{"no mchid", func(c *Config) { c.WechatPay.MchID = "" }, "GATEWAY_WECHATPAY_MCHID"},
		{"no keys", func(c *Config) { c.WechatPay.PublicKeyFile = "" }, "GATEWAY_WECHATPAY_PUBLIC_KEY_FILE"},
		{"bad key id", func(c *Config) { c.WechatPay.PublicKeyID = "x" }, "GATEWAY_WECHATPAY_PUBLIC_KEY_ID"},
		{"no dsn", func(c *Config) { c.Database.DSN = "" }, "GATEWAY_DATABASE_DSN"},
		{"negative finish delay", func(c *Config) { c.Redis.FinishDelay = -time.Millisecond }, "GATEWAY_REDIS_FINISH_DELAY"},
		// A payment notification with its coupons runs to several KiB.
		{"body cap under a notification", func(c *Config) { c.HTTP.MaxBodyBytes = 1024 }, "GATEWAY_HTTP_MAX_BODY_BYTES"},
		{"no read timeout", func(c *Config) { c.HTTP.ReadTimeout = 0 }, "GATEWAY_HTTP_READ_TIMEOUT"},
		{"no idle timeout", func(c *Config) { c.HTTP.IdleTimeout = 0 }, "GATEWAY_HTTP_IDLE_TIMEOUT"},
		{"write timeout under the API's", func(c *Config) { c.HTTP.WriteTimeout = c.HTTP.APITimeout }, "GATEWAY_HTTP_WRITE_TIMEOUT"},
		{"long finish delay", func(c *Config) { c.Redis.FinishDelay = time.Minute }, "GATEWAY_REDIS_FINISH_DELAY"},
		{"look back past WeChat's bills", func(c *Config) { c.Finance.ReconcileLookBack = 120 }, "GATEWAY_FINANCE_RECONCILE_LOOK_BACK"},
		{"unbounded bill download", func(c *Config) { c.WechatPay.BillTimeout = time.Hour }, "GATEWAY_WECHATPAY_BILL_TIMEOUT"},
		{"default run shorter than its download", func(c *Config) { c.WechatPay.BillTimeout = 20 * time.Minute },
			"GATEWAY_FINANCE_RECONCILE_TIMEOUT"},
		{"run shorter than its download", func(c *Config) { c.Finance.ReconcileTimeout = 2 * time.Minute },
			"GATEWAY_FINANCE_RECONCILE_TIMEOUT"},
		{"no shutdown time", func(c *Config) { c.HTTP.ShutdownTimeout = 0 }, "GATEWAY_HTTP_SHUTDOWN_TIMEOUT"},
		{"no API time, write timeout under its default", func(c *Config) {
			c.HTTP.APITimeout, c.HTTP.WriteTimeout = 0, 5*time.Second
		}, "GATEWAY_HTTP_API_TIMEOUT"},
		{"drain past a minute", func(c *Config) { c.HTTP.DrainDelay = 2 * time.Minute }, "GATEWAY_HTTP_DRAIN_DELAY"},
		{"shutdown shorter than an attempt", func(c *Config) {
			c.Inventory.BaseURL, c.Inventory.Timeout, c.Outbox.Lease = "http://inv", 10*time.Second, time.Minute
		}, "GATEWAY_HTTP_SHUTDOWN_TIMEOUT"},
		{"take-over not a time", func(c *Config) { c.Finance.ReconcileFrom = "last monday" }, "GATEWAY_FINANCE_RECONCILE_FROM"},
		{"answer after WeChat gave up", func(c *Config) { c.HTTP.NotifyTimeout = 6 * time.Second }, "GATEWAY_HTTP_NOTIFY_TIMEOUT"},
		{"Redis wait eats the notification's time", func(c *Config) {
			c.Redis.Addr, c.Redis.OpTimeout = "127.0.0.1:6379", 2*time.Second
		}, "GATEWAY_REDIS_OP_TIMEOUT"},
		// 0 is no "no wait": the client waits its default 250 ms, more than
		// half of this notify timeout with the pool's 100 ms.
		{"Redis defaults eat the notification's time", func(c *Config) {
			c.Redis.Addr, c.Redis.OpTimeout, c.Redis.PoolTimeout, c.HTTP.NotifyTimeout = "127.0.0.1:6379", 0, 0, 600*time.Millisecond
		}, "GATEWAY_REDIS_OP_TIMEOUT"},
		// Neither ever connects: every instance would run on its own
		// in-process guards, as while Redis is down, with one log line.
		{"Redis as a URL", func(c *Config) { c.Redis.Addr = "redis://127.0.0.1:6379" }, "GATEWAY_REDIS_ADDR"},
		{"Redis without its port", func(c *Config) { c.Redis.Addr = "redis.internal" }, "GATEWAY_REDIS_ADDR"},
		// Dialled as a host named "s3cret@10.0.0.5", logged with it.
		{"Redis with a password in its address", func(c *Config) { c.Redis.Addr = "s3cret@10.0.0.5:6379" }, "GATEWAY_REDIS_ADDR"},
		{"Redis with a user and password in its address", func(c *Config) { c.Redis.Addr = "gw:s3cret@10.0.0.5:6379" }, "GATEWAY_REDIS_ADDR"},
		// Sent with every refund: WeChat Pay refuses each one sent with it.
		{"refund notify_url without its scheme", func(c *Config) { c.WechatPay.RefundNotifyURL = "pay.example.com/v1/wechatpay/notify/refund" },
			"GATEWAY_WECHATPAY_REFUND_NOTIFY_URL"},
		// WeChat Pay notifies https:// alone (its refund API says so).
		{"refund notify_url over plain HTTP to WeChat Pay", func(c *Config) { c.WechatPay.RefundNotifyURL = "http://pay.example.com/v1/wechatpay/notify/refund" },
			"GATEWAY_WECHATPAY_REFUND_NOTIFY_URL"},
		{"refund notify_url over plain HTTP to WeChat Pay named", func(c *Config) {
			c.WechatPay.BaseURL, c.WechatPay.RefundNotifyURL = "https://api.mch.weixin.qq.com", "http://127.0.0.1:8080/v1/wechatpay/notify/refund"
		}, "GATEWAY_WECHATPAY_REFUND_NOTIFY_URL"},
		// The payment route answers every REFUND.* notification 400.
		{"refund notify_url at the payment route", func(c *Config) {
			c.WechatPay.RefundNotifyURL = "https://pay.example.com/v1/wechatpay/notify/payment"
		}, "GATEWAY_WECHATPAY_REFUND_NOTIFY_URL"},
		{"refund notify_url at the payment route behind a prefix", func(c *Config) {
			c.WechatPay.RefundNotifyURL = "https://pay.example.com/gw/v1/wechatpay/notify/payment/"
		}, "GATEWAY_WECHATPAY_REFUND_NOTIFY_URL"},
		{"refund notify_url the payments' notify_url", func(c *Config) {
			c.WechatPay.NotifyURL = "https://pay.example.com/wx/notify"
			c.WechatPay.RefundNotifyURL = c.WechatPay.NotifyURL
		}, "GATEWAY_WECHATPAY_REFUND_NOTIFY_URL"},
		// Sent as it is with every refund: "/refund " is not the route.
		{"refund notify_url with a trailing space", func(c *Config) {
			c.WechatPay.RefundNotifyURL = "https://pay.example.com/v1/wechatpay/notify/refund "
		}, "GATEWAY_WECHATPAY_REFUND_NOTIFY_URL"},
		{"refund notify_url with a query", func(c *Config) { c.WechatPay.RefundNotifyURL = "https://pay.example.com/notify?kind=refund" },
			"GATEWAY_WECHATPAY_REFUND_NOTIFY_URL"},
		// Compared as they are with each notification (its mchid, appid and
		// Wechatpay-Serial), sent as they are with each call: with the
		// newline of the file they were copied from, every notification is
		// refused (the serial: 401 "unknown Wechatpay-Serial").
		{"mchid with a newline", func(c *Config) { c.WechatPay.MchID = "1900000109\n" }, "GATEWAY_WECHATPAY_MCHID"},
		{"appid with a space", func(c *Config) { c.WechatPay.AppID = " wxd678efh567hg6787" }, "GATEWAY_WECHATPAY_APPID"},
		{"public key id with a newline", func(c *Config) { c.WechatPay.PublicKeyID = "PUB_KEY_ID_1\n" }, "GATEWAY_WECHATPAY_PUBLIC_KEY_ID"},
		{"merchant serial with a newline", func(c *Config) { c.WechatPay.MerchantSerial = "5157F09EFDC096DE15EBE81A47057A7232F1B8E1\r\n" },
			"GATEWAY_WECHATPAY_MERCHANT_SERIAL"},
		{"log level misspelt", func(c *Config) { c.Log.Level = "inof" }, "GATEWAY_LOG_LEVEL"},
		{"breaker open for an hour", func(c *Config) { c.Redis.BreakerCooldown = time.Hour }, "GATEWAY_REDIS_BREAKER_COOLDOWN"},
		{"WeChat Pay over plain HTTP", func(c *Config) { c.WechatPay.BaseURL = "http://api.mch.weixin.qq.com" },
			"GATEWAY_WECHATPAY_BASE_URL"},
		{"WeChat Pay over plain HTTP to a LAN address", func(c *Config) { c.WechatPay.BaseURL = "http://10.0.0.8:8081" },
			"GATEWAY_WECHATPAY_BASE_URL"},
		{"negative lock wait", func(c *Config) { c.Database.LockWaitTimeout = -time.Second }, "GATEWAY_DATABASE_LOCK_WAIT_TIMEOUT"},
		{"pprof on every interface", func(c *Config) { c.HTTP.PprofAddr = ":6060" }, "GATEWAY_HTTP_PPROF_ADDR"},
		{"metrics without a key on a public address", func(c *Config) { c.HTTP.MetricsAddr = "203.0.113.7:9464" }, "GATEWAY_HTTP_METRICS_ADDR"},
		{"metrics without a key on a public IPv6 address", func(c *Config) { c.HTTP.MetricsAddr = "[2001:db8::7]:9464" }, "GATEWAY_HTTP_METRICS_ADDR"},
		{"bulkheads take the whole pool", func(c *Config) {
			c.Database.DSN, c.Database.MaxOpenConns = "mysql://u@tcp(db:3306)/gw", 16
		}, "GATEWAY_DATABASE_MAX_OPEN_CONNS"},
		// 16 + 2 + 16 + 4 capped and 2 + 4 for notifications: nothing left.
		{"bulkheads leave the rest of the gateway nothing", func(c *Config) {
			c.Database.DSN, c.Database.MaxOpenConns = "mysql://u@tcp(db:3306)/gw", 44
		}, "GATEWAY_DATABASE_MAX_OPEN_CONNS"},
		{"a negative cap reads as its default", func(c *Config) {
			c.Database.DSN, c.Database.MaxOpenConns, c.Auth.MaxKeyLookups = "mysql://u@tcp(db:3306)/gw", 40, -50
		}, "GATEWAY_DATABASE_MAX_OPEN_CONNS"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := base()
			tc.edit(&c)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.field) {
				t.Fatalf("err = %v, want it to name %s", err, tc.field)
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Fatalf("err = %v quotes the password", err)
			}
		})
	}
	t.Run("WeChat Pay over TLS, a simulator and pprof on this host", func(t *testing.T) {
		for _, u := range []string{"", "https://api.mch.weixin.qq.com", "http://127.0.0.1:8081", "http://localhost:8081", "http://[::1]:8081",
			"http://[::1]/", "http://LOCALHOST:8081"} {
			c := base()
			c.WechatPay.BaseURL, c.HTTP.PprofAddr = u, "127.0.0.1:6060"
			// A simulator may notify over plain HTTP; WeChat Pay over TLS.
			c.WechatPay.RefundNotifyURL = "https://pay.example.com/v1/wechatpay/notify/refund"
			if strings.HasPrefix(u, "http://") {
				c.WechatPay.RefundNotifyURL = "http://127.0.0.1:8080/v1/wechatpay/notify/refund"
			}
			if err := c.Validate(); err != nil {
				t.Fatalf("base_url %q: %v", u, err)
			}
		}
	})
	t.Run("metrics on a private, loopback or unnamed address", func(t *testing.T) {
		for _, a := range []string{"", ":9464", "127.0.0.1:9464", "10.0.0.5:9464", "192.168.1.2:9464", "[fd00::5]:9464", "100.64.3.7:9464",
			"metrics.internal:9464"} {
			c := base()
			c.HTTP.MetricsAddr = a
			if err := c.Validate(); err != nil {
				t.Fatalf("metrics_addr %q: %v", a, err)
			}
		}
	})
	t.Run("take-over time or day", func(t *testing.T) {
		for in, want := range map[string]string{"2026-12-01": "2026-11-30T16:00:00Z", "2026-12-01T09:30:00+08:00": "2026-12-01T01:30:00Z"} {
			got, err := FinanceConfig{ReconcileFrom: in}.takeOver()
			if err != nil || got.Format(time.RFC3339) != want {
				t.Fatalf("takeOver(%s) = %v, %v; want %s", in, got, err, want)
			}
		}
	})
	t.Run("user tokens without an audience, with a long leeway, an unbounded lifetime or a secret or claim edged with white space", func(t *testing.T) {
		day := 24 * time.Hour
		for _, j := range []JWTConfig{{HS256Secret: strings.Repeat("s", 32), MaxLifetime: day},
			{HS256Secret: strings.Repeat("s", 32), Audience: "refunds", Leeway: 10 * time.Minute, MaxLifetime: day},
			{HS256Secret: strings.Repeat("s", 32), Audience: "refunds"},
			{HS256Secret: strings.Repeat("s", 32), Audience: "refunds", MaxLifetime: 365 * day},
			{HS256Secret: strings.Repeat("s", 32) + "\n", Audience: "refunds", MaxLifetime: day},
			{HS256Secret: " " + strings.Repeat("s", 32), Audience: "refunds", MaxLifetime: day}} {
			if _, err := j.gatewayJWT(); err == nil {
				t.Fatalf("%+v accepted", j)
			}
		}
		if _, err := (JWTConfig{HS256Secret: strings.Repeat("s", 32), Audience: "refunds", Leeway: time.Minute, MaxLifetime: day}).gatewayJWT(); err != nil {
			t.Fatal(err)
		}
		// Compared as they are with each token's claims: every token would get 401.
		for field, edit := range map[string]func(*JWTConfig){
			"GATEWAY_REFUNDS_JWT_AUDIENCE":     func(j *JWTConfig) { j.Audience = "refunds\n" },
			"GATEWAY_REFUNDS_JWT_ISSUER":       func(j *JWTConfig) { j.Issuer = " https://auth.example.com" },
			"GATEWAY_REFUNDS_JWT_OPENID_CLAIM": func(j *JWTConfig) { j.OpenIDClaim = "openid\n" },
		} {
			j := JWTConfig{HS256Secret: strings.Repeat("s", 32), Audience: "refunds", MaxLifetime: day}
			edit(&j)
			if _, err := j.gatewayJWT(); err == nil || !strings.Contains(err.Error(), field) {
				t.Fatalf("%+v: err = %v, want it to name %s", j, err, field)
			}
		}
	})
	// Named, not quoted: the value may be a secret set in the wrong
	// variable (strconv's and time's errors quote it).
	t.Run("bad env value", func(t *testing.T) {
		for _, v := range []string{"GATEWAY_HTTP_READ_TIMEOUT", "GATEWAY_HTTP_MAX_BODY_BYTES", "GATEWAY_RUNTIME_GC_PERCENT",
			"GATEWAY_REDIS_TLS", "GATEWAY_OUTBOX_JITTER"} {
			t.Run(v, func(t *testing.T) {
				t.Setenv(v, "s3cret-soon")
				_, err := Load("")
				if err == nil || !strings.Contains(err.Error(), v) || strings.Contains(err.Error(), "s3cret") {
					t.Fatalf("err = %v, want it to name %s without quoting the value", err, v)
				}
			})
		}
	})
	t.Run("bad api key spec", func(t *testing.T) {
		c := testConfig(t, backends[0])
		c.Auth.APIKeys = []string{"x:root:abc"}
		if _, err := NewMain(t.Context(), c); err == nil || !strings.Contains(err.Error(), "GATEWAY_API_KEYS") {
			t.Fatalf("err = %v", err)
		}
	})
}

// TestExampleConfigStarts: configs/gateway.yaml, with its secret files
// present and the database, Redis and addresses pointed at the test's,
// starts a gateway with the refund API on (a request without a token is
// refused 401, not routed 404). Before, its empty merchant_serial and
// refunds.jwt.audience stopped the start.
func TestExampleConfigStarts(t *testing.T) {
	k, keys := testKeys(t)
	raw, err := os.ReadFile("../../configs/gateway.yaml")
	if err != nil {
		t.Fatal(err)
	}
	secrets := t.TempDir()
	for name, from := range map[string]string{"wechatpay_public_key.pem": "platform_public_key.pem",
		"apiclient_key.pem": "merchant_private_key.pem"} {
		b, err := os.ReadFile(filepath.Join(keys, from))
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(secrets, name), string(b))
	}
	writeFile(t, filepath.Join(secrets, "wechatpay_apiv3_key"), k.APIv3Key)
	writeFile(t, filepath.Join(secrets, "refund_jwt_secret"), jwtSecret)
	path := filepath.Join(t.TempDir(), "gateway.yaml")
	writeFile(t, path, strings.ReplaceAll(string(raw), "/run/secrets/", secrets+"/"))
	test := testConfig(t, backend{name: "mysql+redis", mysql: true, redis: true})
	for name, v := range map[string]string{"GATEWAY_DATABASE_DSN": test.Database.DSN, "GATEWAY_REDIS_ADDR": test.Redis.Addr,
		"GATEWAY_REDIS_PREFIX": test.Redis.Prefix, "GATEWAY_HTTP_ADDR": "127.0.0.1:0", "GATEWAY_HTTP_METRICS_ADDR": "127.0.0.1:0",
		"GATEWAY_FINANCE_DAILY_RECONCILE_AT": "off", "GATEWAY_LOG_LEVEL": "error"} {
		t.Setenv(name, v)
	}
	cfg, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	m := startGateway(t, cfg)
	resp, err := http.Post(m.URL()+"/v1/refunds", "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("POST /v1/refunds without a token: %d, want 401 (refund API on)", resp.StatusCode)
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestRefundSettingsCheckedWhileTheAPIIsOff: with a token key but no
// merchant key the refund API stays off, yet a bad token key or bad
// timings fail the start now, not on the day the merchant key is added.
func TestRefundSettingsCheckedWhileTheAPIIsOff(t *testing.T) {
	cases := []struct {
		name, want string
		edit       func(*RefundsConfig)
	}{
		{"short secret", "refunds.jwt", func(r *RefundsConfig) { r.JWT.HS256Secret = "short" }},
		{"janitor races the request", "safety_buffer", func(r *RefundsConfig) { r.SafetyBuffer, r.CallTimeout = 10*time.Second, 15*time.Second }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t, backends[0])
			cfg.WechatPay.MerchantPrivateKeyFile = ""
			cfg.Refunds.JWT.HS256Secret, cfg.Refunds.JWT.Audience = strings.Repeat("s", 32), "refunds"
			tc.edit(&cfg.Refunds)
			startRefused(t, cfg, tc.want)
		})
	}
}

// TestSilentSettingsAreCaught: a second YAML document (which would be
// dropped) is refused, and a GATEWAY_* variable that names no setting is
// found for the start-up warning, the documented GATEWAY_API_KEYS, the
// config path and the tests' own variables excepted.
func TestSilentSettingsAreCaught(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gateway.yaml")
	if err := os.WriteFile(path, []byte("log:\n  level: info\n---\nhttp:\n  addr: 0.0.0.0:80\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(path); err == nil || !strings.Contains(err.Error(), "second YAML document") {
		t.Fatalf("two documents: err = %v, want a refusal", err)
	}
	// A trailing "---", as generated files often end, is no document.
	if err := os.WriteFile(path, []byte("---\nlog:\n  level: warn\n---\n# end\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if cfg, err := Load(path); err != nil || cfg.Log.Level != "warn" {
		t.Fatalf("one document with separators: level %q, err %v", cfg.Log.Level, err)
	}
	env := []string{"GATEWAY_HTTP_ADDR=:8080", "GATEWAY_API_KEYS=x", "GATEWAY_CONFIG=/etc/gw.yaml", "GATEWAY_TEST_MYSQL_DSN=x",
		"GATEWAY_AUTH_API_KEYS=x", "GATEWAY_DATABSE_DSN=mysql://x", "PATH=/bin", "GATEWAY_REDIS_OP_TIMEOUT=1s"}
	if got := unknownEnv(env); !slices.Equal(got, []string{"GATEWAY_AUTH_API_KEYS", "GATEWAY_DATABSE_DSN"}) {
		t.Fatalf("unknown variables = %v, want the misspelt DSN and GATEWAY_AUTH_API_KEYS", got)
	}
}

// TestEmptyVariableLeavesTheFileValue: a variable set empty (a template's
// unset ${REDIS_ADDR}) is ignored, so it cannot turn off the file's Redis
// and with it the guards instances share; the start-up warning names it.
func TestEmptyVariableLeavesTheFileValue(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gateway.yaml")
	if err := os.WriteFile(path, []byte("redis:\n  addr: 10.0.0.5:6379\nhttp:\n  addr: 127.0.0.1:9000\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("GATEWAY_REDIS_ADDR", "")
	t.Setenv("GATEWAY_HTTP_ADDR", "  ")
	cfg, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Redis.Addr != "10.0.0.5:6379" || cfg.HTTP.Addr != "127.0.0.1:9000" {
		t.Fatalf("redis %q, http %q: an empty variable overrode the file", cfg.Redis.Addr, cfg.HTTP.Addr)
	}
	env := []string{"GATEWAY_REDIS_ADDR=", "GATEWAY_HTTP_ADDR= ", "GATEWAY_TEST_REDIS_ADDR=", "GATEWAY_LOG_LEVEL=info"}
	if got := emptyEnv(env); !slices.Equal(got, []string{"GATEWAY_HTTP_ADDR", "GATEWAY_REDIS_ADDR"}) {
		t.Fatalf("empty variables = %v", got)
	}
}

// TestBlankDSNNamesNoDatabase: GATEWAY_DATABASE_DSN of spaces is ignored
// like any empty variable, so it names no database either: an admin
// command is refused rather than run on make run's local file.
func TestBlankDSNNamesNoDatabase(t *testing.T) {
	t.Setenv("GATEWAY_CONFIG", "")
	t.Setenv("GATEWAY_DATABASE_DSN", " ")
	cfg, err := Load("")
	if err != nil {
		t.Fatal(err)
	}
	if err := databaseNamed("apikey", "", cfg); err == nil {
		t.Fatalf("an admin command was let run on %q", cfg.Database.DSN)
	}
}

// TestStrayArgumentIsRefused: `gateway serve prod.yaml` (the file without
// --config) is refused, as the admin commands refuse one, instead of
// starting on the environment's database with the file ignored (no Redis,
// the default limits and keys).
func TestStrayArgumentIsRefused(t *testing.T) {
	t.Setenv("GATEWAY_CONFIG", "")
	t.Setenv("GATEWAY_DATABASE_DSN", filepath.Join(t.TempDir(), "gw.db"))
	for _, name := range []string{"serve", "migrate", "outbox replay"} {
		_, _, err := loadFromFlags(name, []string{"prod.yaml"}, true)
		if err == nil || !strings.Contains(err.Error(), "prod.yaml") {
			t.Fatalf("%s prod.yaml: err = %v, want a refusal naming the argument", name, err)
		}
	}
}

// TestSecretGivenForItsFileIsNotQuoted: a secret set in its _FILE variable
// (GATEWAY_WECHATPAY_APIV3_KEY_FILE set to the key itself, as a deployment
// mapping a secret to the wrong variable does) stops the start with an
// error naming the setting, without quoting the value: the error is the
// process's last log line. Before, os.ReadFile's "open <path>: no such
// file or directory" carried the key, the HS256 secret or the merchant's
// private key into the log.
func TestSecretGivenForItsFileIsNotQuoted(t *testing.T) {
	const s3cret = "s3cretS3cretS3cretS3cretS3cret42"
	cases := []struct {
		name, field string
		edit        func(*Config)
	}{
		{"APIv3 key", "GATEWAY_WECHATPAY_APIV3_KEY_FILE", func(c *Config) {
			c.WechatPay.APIv3Key, c.WechatPay.APIv3KeyFile = "", s3cret
		}},
		{"previous APIv3 key", "GATEWAY_WECHATPAY_PREVIOUS_APIV3_KEY_FILE", func(c *Config) {
			c.WechatPay.PreviousAPIv3KeyFile = s3cret
		}},
		{"HS256 secret", "GATEWAY_REFUNDS_JWT_HS256_SECRET_FILE", func(c *Config) {
			c.Refunds.JWT.HS256SecretFile, c.Refunds.JWT.Audience = s3cret, "refunds"
		}},
		{"merchant private key", "GATEWAY_WECHATPAY_MERCHANT_PRIVATE_KEY_FILE", func(c *Config) {
			c.WechatPay.MerchantSerial = "5157F09EFDC096DE15EBE81A47057A7232F1B8E1"
			c.WechatPay.MerchantPrivateKeyFile = "-----BEGIN PRIVATE KEY-----\n" + s3cret + "\n-----END PRIVATE KEY-----\n"
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t, backend{name: "sqlite"})
			tc.edit(&cfg)
			if err := startRefused(t, cfg, tc.field); strings.Contains(err.Error(), s3cret) {
				t.Fatalf("err = %v quotes the secret", err)
			}
		})
	}
}

// TestSecretAndItsFileBothSetIsRefused: the APIv3 key or the HS256 secret
// given both inline (a GATEWAY_ variable left from an older deployment)
// and as a file stops the start. Before, the inline one won and the file
// was ignored: once the key was rotated in the file, every notification
// failed to decrypt (every token was refused) while the gateway looked
// configured.
func TestSecretAndItsFileBothSetIsRefused(t *testing.T) {
	file := filepath.Join(t.TempDir(), "secret")
	writeFile(t, file, strings.Repeat("r", 32)+"\n")
	cases := []struct {
		name, field string
		edit        func(*Config)
	}{
		{"APIv3 key", "GATEWAY_WECHATPAY_APIV3_KEY_FILE", func(c *Config) { c.WechatPay.APIv3KeyFile = file }},
		{"previous APIv3 key", "GATEWAY_WECHATPAY_PREVIOUS_APIV3_KEY_FILE", func(c *Config) {
			c.WechatPay.PreviousAPIv3Key, c.WechatPay.PreviousAPIv3KeyFile = strings.Repeat("p", 32), file
		}},
		{"HS256 secret", "GATEWAY_REFUNDS_JWT_HS256_SECRET_FILE", func(c *Config) {
			c.Refunds.JWT.HS256Secret, c.Refunds.JWT.HS256SecretFile, c.Refunds.JWT.Audience = jwtSecret, file, jwtAudience
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t, backend{name: "sqlite"})
			tc.edit(&cfg)
			startRefused(t, cfg, tc.field) // else one of the two would be ignored
		})
	}
}
