package main

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/url"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"paygateway/gateway"
	"paygateway/gateway/redisstore"
)

// Config is the whole gateway configuration. Every field can be set in
// the YAML file and overridden by an environment variable named
// GATEWAY_<SECTION>_<FIELD> (or the env tag where one is given).
type Config struct {
	HTTP      HTTPConfig      `yaml:"http"`
	Notify    NotifyConfig    `yaml:"notify"`
	Database  DatabaseConfig  `yaml:"database"`
	Redis     RedisConfig     `yaml:"redis"`
	WechatPay WechatPayConfig `yaml:"wechatpay"`
	Auth      AuthConfig      `yaml:"auth"`
	Refunds   RefundsConfig   `yaml:"refunds"`
	Log       LogConfig       `yaml:"log"`
	RateLimit RateLimitConfig `yaml:"rate_limit"`

	Outbox       OutboxConfig       `yaml:"outbox"`
	Inventory    InventoryConfig    `yaml:"inventory"`
	Compensation CompensationConfig `yaml:"compensation"`
	Finance      FinanceConfig      `yaml:"finance"`
	Runtime      RuntimeConfig      `yaml:"runtime"`
}

// RuntimeConfig tunes the Go runtime of a gateway process. The GOGC and
// GOMEMLIMIT environment variables, when set, win over both fields.
type RuntimeConfig struct {
	// GCPercent is GOGC: the gateway's live heap is small and its garbage
	// plentiful, so collecting less often saves ~20% of its CPU (see
	// BENCHMARKS.md). 0 keeps Go's default of 100.
	GCPercent int `yaml:"gc_percent"`
	// MemoryLimit (bytes) is GOMEMLIMIT: the collector works harder as
	// the heap nears it, bounding what a high GCPercent may cost. 0: none.
	MemoryLimit int64 `yaml:"memory_limit"`
}

// HTTPConfig bounds the HTTP server.
type HTTPConfig struct {
	Addr              string        `yaml:"addr"`
	ReadHeaderTimeout time.Duration `yaml:"read_header_timeout"`
	ReadTimeout       time.Duration `yaml:"read_timeout"`
	WriteTimeout      time.Duration `yaml:"write_timeout"`
	IdleTimeout       time.Duration `yaml:"idle_timeout"`
	MaxBodyBytes      int64         `yaml:"max_body_bytes"`
	// TrustedProxies are the addresses or CIDRs of the load balancers in
	// front of the gateway: only from them is X-Forwarded-For believed
	// for the caller's address in the audit log. Empty: the TCP
	// peer is the caller.
	TrustedProxies  []string      `yaml:"trusted_proxies"`
	NotifyTimeout   time.Duration `yaml:"notify_timeout"`
	APITimeout      time.Duration `yaml:"api_timeout"`
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
	// DrainDelay, when set, is how long a shutdown keeps serving with
	// /readyz answering 503 before it stops accepting, so a load balancer
	// that polls readiness takes the instance out first (instead of a
	// preStop sleep). Default 0: stop accepting at once.
	DrainDelay time.Duration `yaml:"drain_delay"`
	// PprofAddr, when set, serves net/http/pprof there, e.g.
	// "127.0.0.1:6060"; keep it on a loopback or internal address.
	PprofAddr string `yaml:"pprof_addr"`
	// MetricsAddr, when set, serves /metrics on its own listener there
	// (e.g. "10.0.0.5:9464", or ":9464" behind a firewall), without a key
	// (so never on a public IP: refused), and not on Addr,
	// which faces WeChat Pay and the Internet. Empty: /metrics is served
	// on Addr, to a metrics or ops API key only.
	MetricsAddr string `yaml:"metrics_addr"`
	// MaxConnections caps the connections open at once on Addr; more
	// wait in the kernel's accept queue (up to its backlog) until one
	// closes. A connection opening at 90% of it closes those idle for
	// more than 250 ms (see connShedder). Default 4096.
	MaxConnections int `yaml:"max_connections"`
	// NotifyAddr, when set, is a second listener for WeChat Pay's
	// notifications only (and /healthz, /readyz): point notify_url at it,
	// and a flood of API clients holding every connection of Addr cannot
	// keep a notification out. Addr serves the notifications too, since
	// an order keeps the notify_url it was created with. Empty: none.
	NotifyAddr string `yaml:"notify_addr"`
	// NotifyMaxConnections caps the connections open at once on
	// NotifyAddr, shed like Addr's (default 1024).
	NotifyMaxConnections int `yaml:"notify_max_connections"`
}

// NotifyConfig tunes the group commit of payment notifications: up to
// BatchWorkers ledger transactions at once, each holding at most BatchMax
// notifications that arrived while the others were busy.
type NotifyConfig struct {
	BatchWorkers int `yaml:"batch_workers"`
	BatchMax     int `yaml:"batch_max"`
	// BatchSpill: while one transaction runs, another starts only when
	// this many notifications wait; fewer share the next one.
	BatchSpill int `yaml:"batch_spill"`
}

// DatabaseConfig says where the ledger lives.
type DatabaseConfig struct {
	DSN             string        `yaml:"dsn"`
	MaxOpenConns    int           `yaml:"max_open_conns"`
	MaxIdleConns    int           `yaml:"max_idle_conns"`
	ConnMaxLifetime time.Duration `yaml:"conn_max_lifetime"`
	ConnMaxIdleTime time.Duration `yaml:"conn_max_idle_time"`
	DialTimeout     time.Duration `yaml:"dial_timeout"`
	ReadTimeout     time.Duration `yaml:"read_timeout"`
	WriteTimeout    time.Duration `yaml:"write_timeout"`
	// LockWaitTimeout bounds a MySQL row-lock wait on the server, where a
	// cancelled context does not reach (innodb_lock_wait_timeout).
	LockWaitTimeout time.Duration `yaml:"lock_wait_timeout"`
	// StatementTimeout ends a statement of the pool on the server (MariaDB's
	// max_statement_time, MySQL's max_execution_time for SELECTs): one whose
	// client gave up would otherwise run on. 0: the server's (none).
	StatementTimeout time.Duration `yaml:"statement_timeout"`
	// TLSCAFile turns TLS on to MySQL, verifying the server's certificate
	// against this CA (PEM) and the DSN's host. A DSN's tls=skip-verify or
	// tls=preferred, which verify nothing, is refused.
	TLSCAFile string `yaml:"tls_ca_file"`
}

// RedisConfig is optional: an empty Addr means in-process guards.
type RedisConfig struct {
	Addr     string `yaml:"addr"`
	Username string `yaml:"username"` // ACL user (Redis 6+); empty: the default user
	Password string `yaml:"password" secret:"true"`
	// TLS speaks TLS to Redis, verifying its certificate against
	// TLSCAFile (PEM), or the system's roots when that is empty.
	TLS          bool          `yaml:"tls"`
	TLSCAFile    string        `yaml:"tls_ca_file"`
	DB           int           `yaml:"db"`
	Prefix       string        `yaml:"prefix"`
	PoolSize     int           `yaml:"pool_size"`
	DialTimeout  time.Duration `yaml:"dial_timeout"`
	ReadTimeout  time.Duration `yaml:"read_timeout"`
	WriteTimeout time.Duration `yaml:"write_timeout"`
	PoolTimeout  time.Duration `yaml:"pool_timeout"`
	OpTimeout    time.Duration `yaml:"op_timeout"`
	// FinishDelay lets the gate's post-commit call (committed mark, lock
	// release) ride in the next Redis round trip, waiting at most this
	// long, instead of costing one of its own; 0 sends it at once.
	FinishDelay time.Duration `yaml:"finish_delay"`
	// BreakerCooldown: after a failed Redis call, Redis is skipped (the
	// in-process guards answer) for this long, so a hung Redis costs a
	// request at most one op_timeout; default 2 s.
	BreakerCooldown time.Duration `yaml:"breaker_cooldown"`
	// Instances is how many gateway instances share this Redis: the most
	// that run at once (an autoscaler's maximum); default 1. While Redis
	// cannot decide, each instance allows only 1/Instances of the
	// merchant-wide refund quota (rate_limit.refund_calls_*), so that
	// together they stay within it.
	Instances int `yaml:"instances"`
}

// WechatPayConfig is the merchant's identity and keys.
type WechatPayConfig struct {
	MchID                  string        `yaml:"mchid"`
	AppID                  string        `yaml:"appid"`
	APIv3Key               string        `yaml:"apiv3_key" secret:"true"`
	APIv3KeyFile           string        `yaml:"apiv3_key_file"`
	PublicKeyFile          string        `yaml:"public_key_file"`
	PublicKeyID            string        `yaml:"public_key_id"`
	PlatformCertFiles      []string      `yaml:"platform_cert_files"`
	MerchantSerial         string        `yaml:"merchant_serial"`
	MerchantPrivateKeyFile string        `yaml:"merchant_private_key_file"`
	BaseURL                string        `yaml:"base_url"`
	Timeout                time.Duration `yaml:"timeout"`
	// BillTimeout bounds a trade bill download (the file, not the API
	// call); 0 means 5m, at most 30m.
	BillTimeout     time.Duration `yaml:"bill_timeout"`
	NotifyURL       string        `yaml:"notify_url"`
	RefundNotifyURL string        `yaml:"refund_notify_url"`
	// PreviousAPIv3Key is the other key of an APIv3 key rotation under
	// way: notifications the current key cannot decrypt are tried with it
	// (README: rotating the APIv3 key).
	PreviousAPIv3Key     string `yaml:"previous_apiv3_key" secret:"true"`
	PreviousAPIv3KeyFile string `yaml:"previous_apiv3_key_file"`
}

// AuthConfig lists API keys as name:role:sha256hex.
type AuthConfig struct {
	APIKeys []string `yaml:"api_keys" env:"GATEWAY_API_KEYS"`
	// MaxKeyLookups caps the database key checks running at once (keys
	// not in api_keys); default 16. A flood of unknown keys then costs at
	// most that many of the pool's connections, which notifications need.
	MaxKeyLookups int `yaml:"max_key_lookups"`
	// FailedKeysPerMinute and FailedKeysBurst limit wrong keys per client
	// address: past the burst, an address gets 429 for any key, the right
	// one too, until the rate lets it try again (defaults 30 and 20;
	// per minute 0: no limit).
	FailedKeysPerMinute int `yaml:"failed_keys_per_minute"`
	FailedKeysBurst     int `yaml:"failed_keys_burst"`
}

// failureLimit is the limit of wrong keys per client address.
func (a AuthConfig) failureLimit() gateway.Limit {
	return gateway.Limit{PerMinute: a.FailedKeysPerMinute, Burst: a.FailedKeysBurst}
}

// LogConfig sets the log level ("debug", "info", "warn", "error").
type LogConfig struct {
	Level string `yaml:"level"`
}

// DefaultConfig runs on an embedded SQLite file with no Redis.
func DefaultConfig() Config {
	return Config{
		HTTP: HTTPConfig{Addr: ":8080", ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
			WriteTimeout: 15 * time.Second, IdleTimeout: 60 * time.Second, MaxBodyBytes: 64 << 10,
			NotifyTimeout: 4 * time.Second, APITimeout: 10 * time.Second, ShutdownTimeout: 15 * time.Second,
			MaxConnections: 4096, NotifyMaxConnections: 1024},
		Notify:  NotifyConfig{BatchWorkers: 2, BatchMax: 32, BatchSpill: 4},
		Runtime: RuntimeConfig{GCPercent: 400, MemoryLimit: 1 << 30},
		Database: DatabaseConfig{DSN: ".run/gateway.db", MaxOpenConns: 50, MaxIdleConns: 25,
			ConnMaxLifetime: 30 * time.Minute, ConnMaxIdleTime: 5 * time.Minute, DialTimeout: 5 * time.Second,
			ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second, LockWaitTimeout: 5 * time.Second,
			StatementTimeout: 30 * time.Second},
		Redis: RedisConfig{Prefix: "gw:", PoolSize: 20, DialTimeout: 200 * time.Millisecond,
			ReadTimeout: 100 * time.Millisecond, WriteTimeout: 100 * time.Millisecond,
			PoolTimeout: 100 * time.Millisecond, OpTimeout: 250 * time.Millisecond, FinishDelay: 2 * time.Millisecond,
			BreakerCooldown: 2 * time.Second, Instances: 1},
		WechatPay: WechatPayConfig{Timeout: 10 * time.Second},
		// A backend clock a little ahead must not turn fresh tokens away.
		Refunds:   RefundsConfig{JWT: JWTConfig{Leeway: 30 * time.Second, MaxLifetime: 24 * time.Hour}},
		Log:       LogConfig{Level: "info"},
		Auth:      AuthConfig{FailedKeysPerMinute: 30, FailedKeysBurst: 20},
		RateLimit: defaultRateLimit(),

		Outbox: defaultOutboxConfig(), Inventory: defaultInventoryConfig(), Compensation: defaultCompensationConfig(),
	}
}

// maxNotifyTimeout is how long WeChat Pay waits for a notification's answer.
const maxNotifyTimeout = 5 * time.Second

// Load reads the YAML file at path (if path is not empty), then the
// environment.
func Load(path string) (Config, error) {
	cfg := DefaultConfig()
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return cfg, fmt.Errorf("read config %s: %w", path, err)
		}
		dec := yaml.NewDecoder(strings.NewReader(string(b)))
		dec.KnownFields(true)
		if err := dec.Decode(&cfg); err != nil {
			return cfg, fmt.Errorf("parse config %s: %w", path, err)
		}
		if err := noSecondDocument(dec); err != nil {
			return cfg, fmt.Errorf("parse config %s: %w", path, err)
		}
	}
	if err := applyEnv(reflect.ValueOf(&cfg).Elem(), "GATEWAY", os.LookupEnv); err != nil {
		return cfg, err
	}
	return cfg, nil
}

// noSecondDocument refuses a second YAML document, which Decode would
// ignore; an empty one (a trailing "---", as generated files often end)
// is no document.
func noSecondDocument(dec *yaml.Decoder) error {
	for {
		var n yaml.Node
		err := dec.Decode(&n)
		switch {
		case errors.Is(err, io.EOF):
			return nil
		case err != nil:
			return err
		case len(n.Content) > 0 && n.Content[0].Tag != "!!null":
			return errors.New("a second YAML document, which would be ignored (one document only)")
		}
	}
}

// warnUnknownEnv logs each GATEWAY_* variable that sets nothing: one
// naming no setting, and one set empty.
func warnUnknownEnv() {
	for _, name := range unknownEnv(os.Environ()) {
		slog.Warn("environment variable names no gateway setting; ignored (misspelt?)", "name", name)
	}
	for _, name := range emptyEnv(os.Environ()) {
		slog.Warn("environment variable is set but empty; ignored: the config file's value (or the default) stands",
			"name", name)
	}
}

// emptyEnv names the GATEWAY_* variables in environ set to nothing but
// space. They are ignored (applyEnv): a deployment template rendering
// GATEWAY_REDIS_ADDR=${REDIS_ADDR} with REDIS_ADDR unset would otherwise
// turn off the file's Redis, and with it the guards shared by instances.
func emptyEnv(environ []string) []string {
	var out []string
	for _, kv := range environ {
		name, value, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, "GATEWAY_") && !strings.HasPrefix(name, "GATEWAY_TEST_") && strings.TrimSpace(value) == "" {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// unknownEnv names the GATEWAY_* variables in environ that set nothing: a
// misspelt setting is otherwise silently ignored. (A warning, not a
// refusal: Kubernetes adds GATEWAY_PORT and the like for a service named
// gateway.)
func unknownEnv(environ []string) []string {
	known := map[string]bool{"GATEWAY_CONFIG": true}
	var cfg Config
	_ = applyEnv(reflect.ValueOf(&cfg).Elem(), "GATEWAY", func(name string) (string, bool) {
		known[name] = true
		return "", false
	})
	var out []string
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, "GATEWAY_") && !known[name] && !strings.HasPrefix(name, "GATEWAY_TEST_") {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// applyEnv walks the struct and sets each field whose variable is set.
func applyEnv(v reflect.Value, prefix string, lookup func(string) (string, bool)) error {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name := prefix + "_" + strings.ToUpper(strings.Split(f.Tag.Get("yaml"), ",")[0])
		if f.Type.Kind() == reflect.Struct && f.Type != reflect.TypeOf(time.Duration(0)) {
			if err := applyEnv(v.Field(i), name, lookup); err != nil {
				return err
			}
			continue
		}
		if tag := f.Tag.Get("env"); tag != "" {
			name = tag
		}
		raw, ok := lookup(name)
		if !ok || strings.TrimSpace(raw) == "" { // set empty: a template's unset variable, not a value
			continue
		}
		if err := setField(v.Field(i), raw); err != nil {
			return fmt.Errorf("environment %s: %w", name, err)
		}
	}
	return nil
}

// setField sets f from an environment variable's text. A value that does
// not parse is refused without being quoted: it may be a secret set in the
// wrong variable.
func setField(f reflect.Value, raw string) error {
	switch {
	case f.Type() == reflect.TypeOf(time.Duration(0)):
		d, err := time.ParseDuration(raw)
		if err != nil {
			return errors.New("is not a duration such as 5s or 1m30s")
		}
		f.SetInt(int64(d))
	case f.Kind() == reflect.String:
		f.SetString(raw)
	case f.Kind() == reflect.Int || f.Kind() == reflect.Int64:
		n, err := strconv.ParseInt(raw, 10, 64)
		if err != nil {
			return errors.New("is not a whole number")
		}
		f.SetInt(n)
	case f.Kind() == reflect.Float64:
		x, err := strconv.ParseFloat(raw, 64)
		if err != nil {
			return errors.New("is not a number")
		}
		f.SetFloat(x)
	case f.Kind() == reflect.Bool:
		b, err := strconv.ParseBool(raw)
		if err != nil {
			return errors.New("is not true or false")
		}
		f.SetBool(b)
	case f.Kind() == reflect.Slice && f.Type().Elem().Kind() == reflect.String:
		f.Set(reflect.ValueOf(splitList(raw)))
	default:
		return fmt.Errorf("unsupported field type %s", f.Type())
	}
	return nil
}

func splitList(raw string) []string {
	var out []string
	for _, s := range strings.Split(raw, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// Validate checks the configuration and names the first bad field.
func (c *Config) Validate() error {
	w := c.WechatPay
	checks := []struct {
		bad   bool
		field string
		why   string
	}{
		{c.HTTP.Addr == "", "http.addr (GATEWAY_HTTP_ADDR)", "is required"},
		{c.Database.DSN == "", "database.dsn (GATEWAY_DATABASE_DSN)", "is required"},
		{w.MchID == "", "wechatpay.mchid (GATEWAY_WECHATPAY_MCHID)", "is required"},
		{w.AppID == "", "wechatpay.appid (GATEWAY_WECHATPAY_APPID)", "is required"},
		// Compared as they are with what WeChat Pay sends (a notification's
		// mchid and appid, its Wechatpay-Serial) and sent as they are: a
		// newline from the file a value was copied from would refuse every
		// notification, or have every call refused.
		{edged(w.MchID), "wechatpay.mchid (GATEWAY_WECHATPAY_MCHID)", edgedWhy},
		{edged(w.AppID), "wechatpay.appid (GATEWAY_WECHATPAY_APPID)", edgedWhy},
		{edged(w.PublicKeyID), "wechatpay.public_key_id (GATEWAY_WECHATPAY_PUBLIC_KEY_ID)", edgedWhy},
		{edged(w.MerchantSerial), "wechatpay.merchant_serial (GATEWAY_WECHATPAY_MERCHANT_SERIAL)", edgedWhy},
		{len(w.APIv3Key) != 32, "wechatpay.apiv3_key (GATEWAY_WECHATPAY_APIV3_KEY)", "must be 32 characters"},
		{w.PreviousAPIv3Key != "" && len(w.PreviousAPIv3Key) != 32,
			"wechatpay.previous_apiv3_key (GATEWAY_WECHATPAY_PREVIOUS_APIV3_KEY)", "must be 32 characters"},
		{w.PreviousAPIv3Key != "" && w.PreviousAPIv3Key == w.APIv3Key,
			"wechatpay.previous_apiv3_key (GATEWAY_WECHATPAY_PREVIOUS_APIV3_KEY)",
			"equals wechatpay.apiv3_key: set the other key of the rotation, or remove it"},
		{w.PublicKeyFile == "" && len(w.PlatformCertFiles) == 0,
			"wechatpay.public_key_file (GATEWAY_WECHATPAY_PUBLIC_KEY_FILE)", "or wechatpay.platform_cert_files is required"},
		{w.PublicKeyFile != "" && !strings.HasPrefix(w.PublicKeyID, "PUB_KEY_ID_"),
			"wechatpay.public_key_id (GATEWAY_WECHATPAY_PUBLIC_KEY_ID)", "must start with PUB_KEY_ID_"},
		{c.Database.LockWaitTimeout < 0, "database.lock_wait_timeout (GATEWAY_DATABASE_LOCK_WAIT_TIMEOUT)", "must not be negative (0: the server's)"},
		{c.Database.StatementTimeout < 0, "database.statement_timeout (GATEWAY_DATABASE_STATEMENT_TIMEOUT)", "must not be negative (0: none)"},
		{!validLogLevel(c.Log.Level), "log.level (GATEWAY_LOG_LEVEL)", "must be debug, info, warn or error"},
		// WeChat Pay's notifications run to several KiB (a payment's coupons
		// in promotion_detail): under the floor they would be answered 413
		// and sent again for a day, unrecorded.
		{c.HTTP.MaxBodyBytes < minBodyBytes, "http.max_body_bytes (GATEWAY_HTTP_MAX_BODY_BYTES)",
			fmt.Sprintf("must be at least %d (WeChat Pay's notifications run to several KiB)", minBodyBytes)},
		{c.HTTP.ReadHeaderTimeout <= 0, "http.read_header_timeout (GATEWAY_HTTP_READ_HEADER_TIMEOUT)", "must be positive"},
		{c.HTTP.ReadTimeout <= 0, "http.read_timeout (GATEWAY_HTTP_READ_TIMEOUT)", "must be positive"},
		{c.HTTP.IdleTimeout <= 0, "http.idle_timeout (GATEWAY_HTTP_IDLE_TIMEOUT)", "must be positive"},
		// Zero is no "unbounded": the router would quietly use 10 s while
		// the checks below, on write_timeout and refunds.in_flight, used 0.
		{c.HTTP.APITimeout <= 0, "http.api_timeout (GATEWAY_HTTP_API_TIMEOUT)", "must be positive"},
		{c.HTTP.ShutdownTimeout <= 0, "http.shutdown_timeout (GATEWAY_HTTP_SHUTDOWN_TIMEOUT)", "must be positive"},
		{c.HTTP.DrainDelay < 0 || c.HTTP.DrainDelay > time.Minute, "http.drain_delay (GATEWAY_HTTP_DRAIN_DELAY)", "must be between 0 and 1m"},
		{c.HTTP.MaxConnections <= 0, "http.max_connections (GATEWAY_HTTP_MAX_CONNECTIONS)", "must be positive"},
		{c.HTTP.NotifyMaxConnections <= 0, "http.notify_max_connections (GATEWAY_HTTP_NOTIFY_MAX_CONNECTIONS)", "must be positive"},
		{sameAddr(c.HTTP.NotifyAddr, c.HTTP.Addr) || sameAddr(c.HTTP.NotifyAddr, c.HTTP.MetricsAddr),
			"http.notify_addr (GATEWAY_HTTP_NOTIFY_ADDR)", "must differ from http.addr and http.metrics_addr"},
		{c.Auth.FailedKeysPerMinute < 0 || c.Auth.FailedKeysBurst < 0,
			"auth.failed_keys_per_minute and auth.failed_keys_burst (GATEWAY_AUTH_FAILED_KEYS_*)", "must not be negative"},
		// WeChat Pay waits 5 s for an answer: a notification answered later
		// counts as failed whatever the answer said.
		{c.HTTP.NotifyTimeout <= 0 || c.HTTP.NotifyTimeout > maxNotifyTimeout,
			"http.notify_timeout (GATEWAY_HTTP_NOTIFY_TIMEOUT)", "must be positive and at most 5s (WeChat Pay's wait)"},
		// A hung Redis must cost a notification a small part of its time,
		// or the request runs out before the call fails and the breaker
		// (which ignores calls whose request gave up) never opens.
		{c.Redis.Addr != "" && redisstore.Config{PoolTimeout: c.Redis.PoolTimeout, OpTimeout: c.Redis.OpTimeout}.Wait() >=
			c.HTTP.NotifyTimeout/2,
			"redis.op_timeout (GATEWAY_REDIS_OP_TIMEOUT)", "plus redis.pool_timeout must be under half of http.notify_timeout"},
		// One that never connects (a URL, a host without its port) would not
		// stop the start: every instance would run on its own in-process
		// guards, as while Redis is down, with one log line saying so.
		{c.Redis.Addr != "" && !redisAddr(c.Redis.Addr), "redis.addr (GATEWAY_REDIS_ADDR)",
			"must be host:port (e.g. 10.0.0.5:6379), not a URL, or a unix socket's /path; " +
				"credentials go in redis.username and redis.password"},
		{c.Database.TLSCAFile != "" && !strings.HasPrefix(c.Database.DSN, "mysql://"),
			"database.tls_ca_file (GATEWAY_DATABASE_TLS_CA_FILE)", "is set but database.dsn names no MySQL server (mysql://…)"},
		{c.Redis.TLSCAFile != "" && !c.Redis.TLS, "redis.tls_ca_file (GATEWAY_REDIS_TLS_CA_FILE)",
			"is set but redis.tls is not (GATEWAY_REDIS_TLS=true)"},
		{c.Redis.BreakerCooldown > time.Minute, "redis.breaker_cooldown (GATEWAY_REDIS_BREAKER_COOLDOWN)",
			"must be at most 1m (every guard stays on its per-instance fallback meanwhile)"},
		{c.HTTP.WriteTimeout <= max(c.HTTP.APITimeout, c.HTTP.NotifyTimeout),
			"http.write_timeout (GATEWAY_HTTP_WRITE_TIMEOUT)", "must be longer than http.api_timeout and http.notify_timeout"},
		{c.Redis.Instances < 1, "redis.instances (GATEWAY_REDIS_INSTANCES)", "must be at least 1"},
		{c.Redis.FinishDelay < 0 || c.Redis.FinishDelay > time.Second,
			"redis.finish_delay (GATEWAY_REDIS_FINISH_DELAY)", "must be between 0 and 1s"},
		{w.BillTimeout < 0 || w.BillTimeout > maxBillTimeout,
			"wechatpay.bill_timeout (GATEWAY_WECHATPAY_BILL_TIMEOUT)", "must be between 0 (5m) and 30m"},
		{c.Finance.ReconcileLookBack < 0 || c.Finance.ReconcileLookBack > 90,
			"finance.reconcile_look_back (GATEWAY_FINANCE_RECONCILE_LOOK_BACK)", "must be between 0 (30) and 90 days"},
		// Plain HTTP to WeChat Pay lets anyone on the path answer for it
		// (a "not found" needs no signature); only a simulator on this host
		// may be spoken to without TLS.
		{!secureOrLocal(w.BaseURL), "wechatpay.base_url (GATEWAY_WECHATPAY_BASE_URL)",
			"must be https:// (http:// only to this host, for a simulator)"},
		// Sent with every refund the gateway asks for: WeChat Pay refuses
		// each one whose notify_url it cannot use.
		{w.RefundNotifyURL != "" && !httpURL(w.RefundNotifyURL), "wechatpay.refund_notify_url (GATEWAY_WECHATPAY_REFUND_NOTIFY_URL)",
			"must be an http:// or https:// URL with a host and no query (WeChat Pay refuses a refund sent with another)"},
		// WeChat Pay notifies https:// alone: a refund's outcome would
		// reach the gateway only by the janitor's queries.
		{plainHTTP(w.RefundNotifyURL) && !simulatorURL(w.BaseURL), "wechatpay.refund_notify_url (GATEWAY_WECHATPAY_REFUND_NOTIFY_URL)",
			"must be https:// (WeChat Pay sends refund notifications to https alone; http:// only while wechatpay.base_url is a simulator on this host)"},
		// The payment route refuses every REFUND.* notification (400,
		// unsupported event_type): WeChat Pay would send each for a day and
		// a refund's outcome reach the ledger only by the janitor's queries.
		{paymentNotifyURL(w.RefundNotifyURL, w.NotifyURL), "wechatpay.refund_notify_url (GATEWAY_WECHATPAY_REFUND_NOTIFY_URL)",
			"is the payment notifications' URL (wechatpay.notify_url, " + paymentNotifyPath + "): point it at /v1/wechatpay/notify/refund"},
		{c.HTTP.PprofAddr != "" && !loopbackAddr(c.HTTP.PprofAddr), "http.pprof_addr (GATEWAY_HTTP_PPROF_ADDR)",
			"must be on this host (127.0.0.1:port): pprof has no key and shows memory"},
		{publicAddr(c.HTTP.MetricsAddr), "http.metrics_addr (GATEWAY_HTTP_METRICS_ADDR)",
			"must not be a public address: /metrics there has no key (use a private or loopback one, or \"\" for the main port with a key)"},
		{cmp.Or(c.Finance.ReconcileTimeout, gateway.DefaultReconcileTimeout) <= w.billTimeout(),
			"finance.reconcile_timeout (GATEWAY_FINANCE_RECONCILE_TIMEOUT)", "must be longer than wechatpay.bill_timeout (5m by default): it bounds the whole run, download included"},
	}
	for _, ch := range checks {
		if ch.bad {
			return fmt.Errorf("config: %s %s", ch.field, ch.why)
		}
	}
	if err := c.checkPoolBudget(); err != nil {
		return err
	}
	if _, err := c.Finance.takeOver(); err != nil {
		return err
	}
	if err := gateway.CheckProxies(c.HTTP.TrustedProxies); err != nil {
		return fmt.Errorf("config: http.trusted_proxies (GATEWAY_HTTP_TRUSTED_PROXIES): %w", err)
	}
	return c.validateOutbox()
}

// notifyConnections is what notifications get of database.max_open_conns
// beside the batch workers' transactions: a delivery's own lookup, and a
// refund notification's or a failed batch's single applies.
const notifyConnections = 4

// notifyPool is the part of database.max_open_conns kept for WeChat Pay's
// notifications: on MySQL a pool of their own, so that nothing else
// (order registration and refund requests, which are not capped, or the
// capped users) can take the connections a payment callback needs.
func (c *Config) notifyPool() int { return max(c.Notify.BatchWorkers, 1) + notifyConnections }

// checkPoolBudget: the bulkheads exist so that a flood of key checks or
// finance exports cannot take the connections payment notifications need;
// on MySQL (SQLite has one connection, and queues) they must leave some.
func (c *Config) checkPoolBudget() error {
	if !strings.HasPrefix(c.Database.DSN, "mysql://") {
		return nil
	}
	capped := c.Auth.keyLookups() + gateway.KnownKeySlots + c.Finance.maxRequests() + c.Outbox.Workers
	if need := capped + c.notifyPool() + mainReserve; c.Database.maxOpenConns() < need {
		return fmt.Errorf("config: database.max_open_conns (GATEWAY_DATABASE_MAX_OPEN_CONNS) must be at least %d: "+
			"auth.max_key_lookups (and %d for known keys), finance.max_requests and outbox.workers may hold %d at once, notifications "+
			"need notify.batch_workers + %d beside them, and %d stay for the rest (orders, refunds, jobs, /readyz)",
			need, gateway.KnownKeySlots, capped, notifyConnections, mainReserve)
	}
	return nil
}

// mainReserve is the part of the main pool no capped user may take: order
// registration, refund requests, the background jobs and /readyz's ping
// still get a connection while every key check, finance request and
// outbox worker holds one (a load balancer would otherwise take a healthy
// instance out under a flood of bad keys).
const mainReserve = 4

// The caps as the gateway applies them (0 or less: the default); the
// pool budget check reads them from here too.
func (a AuthConfig) keyLookups() int       { return positiveOr(a.MaxKeyLookups, 16) }
func (f FinanceConfig) maxRequests() int   { return positiveOr(f.MaxRequests, 16) }
func (d DatabaseConfig) maxOpenConns() int { return positiveOr(d.MaxOpenConns, 50) }

// minBodyBytes is the least http.max_body_bytes: 16 KiB, a few times
// the largest notification WeChat Pay is seen to send.
const minBodyBytes = 16 << 10

// paymentNotifyPath is the gateway's route for payment notifications.
const paymentNotifyPath = "/v1/wechatpay/notify/payment"

// paymentNotifyURL says refundURL would send refund notifications to the
// payment route: it ends in that route's path (behind any prefix a proxy
// adds), or it is notifyURL, the URL orders give for their payments.
func paymentNotifyURL(refundURL, notifyURL string) bool {
	if refundURL == "" {
		return false
	}
	u, err := url.Parse(refundURL)
	return refundURL == notifyURL || err == nil && strings.HasSuffix(strings.TrimSuffix(u.Path, "/"), paymentNotifyPath)
}

// edged says s begins or ends with white space.
func edged(s string) bool { return s != strings.TrimSpace(s) }

// edgedWhy is the refusal of a value edged with white space.
const edgedWhy = "begins or ends with white space (a newline from the file it was copied from?): remove it"

// validLogLevel: a level slog reads (empty: info).
func validLogLevel(s string) bool {
	var l slog.Level
	return s == "" || l.UnmarshalText([]byte(s)) == nil
}

// positiveOr is v, or def when v is not positive.
func positiveOr(v, def int) int {
	if v <= 0 {
		return def
	}
	return v
}

// secureOrLocal: an empty URL (WeChat Pay's own), https, or http to a
// loopback host.
// plainHTTP says raw is an http:// URL.
func plainHTTP(raw string) bool {
	u, err := url.Parse(raw)
	return err == nil && u.Scheme == "http"
}

// simulatorURL says raw is an http:// URL on this host: a simulator's, not
// WeChat Pay's ("" is WeChat Pay's own).
func simulatorURL(raw string) bool {
	u, err := url.Parse(raw)
	return err == nil && u.Scheme == "http" && loopbackAddr(u.Hostname())
}

func secureOrLocal(raw string) bool {
	if raw == "" {
		return true
	}
	u, err := url.Parse(raw)
	if err != nil {
		return false
	}
	return u.Scheme == "https" || u.Scheme == "http" && loopbackAddr(u.Hostname())
}

// loopbackAddr: host[:port] names this host only.
func loopbackAddr(addr string) bool {
	host := addr
	if h, _, err := net.SplitHostPort(addr); err == nil {
		host = h
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// internalNets are the non-public ranges net.IP.IsPrivate leaves out:
// shared address space (RFC 6598: carrier-grade NAT, Tailscale, some
// Kubernetes pod networks) and the benchmarking range (RFC 2544).
var internalNets = []*net.IPNet{mustCIDR("100.64.0.0/10"), mustCIDR("198.18.0.0/15")}

func mustCIDR(s string) *net.IPNet {
	_, n, err := net.ParseCIDR(s)
	if err != nil {
		panic(err)
	}
	return n
}

// publicAddr reports whether addr names a public IP (not loopback,
// private, shared or link-local). A host name or an empty host (every
// interface) cannot be judged here and passes: the firewall's part.
func publicAddr(addr string) bool {
	host := addr
	if h, _, err := net.SplitHostPort(addr); err == nil {
		host = h
	}
	ip := net.ParseIP(host)
	if ip == nil || ip.IsUnspecified() || ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() {
		return false
	}
	for _, n := range internalNets {
		if n.Contains(ip) {
			return false
		}
	}
	return true
}

// loadSecrets fills secrets given as files.
func (c *Config) loadSecrets() error {
	w := &c.WechatPay
	if err := loadKeyFile(&w.APIv3Key, w.APIv3KeyFile, "wechatpay.apiv3_key", "GATEWAY_WECHATPAY_APIV3_KEY"); err != nil {
		return err
	}
	return loadKeyFile(&w.PreviousAPIv3Key, w.PreviousAPIv3KeyFile, "wechatpay.previous_apiv3_key",
		"GATEWAY_WECHATPAY_PREVIOUS_APIV3_KEY")
}

// loadKeyFile sets *key from file, the setting field (variable env) given
// as a file: field_file (env_FILE). Both set is refused.
func loadKeyFile(key *string, file, field, env string) error {
	if *key != "" && file != "" {
		// The file would be ignored: a key rotated in it (as WeChat Pay's
		// was) never used, every notification then failing to decrypt.
		return fmt.Errorf("config: %s (%s) and %s_file (%s_FILE) are both set, and the file would be ignored: set one",
			field, env, field, env)
	}
	if *key == "" && file != "" {
		b, err := readSecretFile(fmt.Sprintf("%s_file (%s_FILE)", field, env), file)
		if err != nil {
			return err
		}
		*key = strings.TrimSpace(string(b))
	}
	return nil
}

// readSecretFile reads the file of a secret named by field. Its error
// does not quote the path: a secret given in its place (the key itself in
// GATEWAY_WECHATPAY_APIV3_KEY_FILE) would reach the log with the start's
// error, as os.ReadFile's "open <path>: …" quotes it.
func readSecretFile(field, path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = fmt.Errorf("%s: %w", pe.Op, pe.Err)
		}
		return nil, fmt.Errorf("config: %s: %w (the path is not shown: it may be the secret itself, set in place of its file)", field, err)
	}
	return b, nil
}

// redisAddr: addr is what go-redis dials: host:port (a numeric port) over
// TCP, or a unix socket's path.
func redisAddr(addr string) bool {
	if strings.HasPrefix(addr, "/") {
		return true
	}
	host, port, err := net.SplitHostPort(addr)
	n, perr := strconv.Atoi(port)
	// user:password@host:port would be dialled as a host named
	// "user:password@host", and the failure logged with it.
	return err == nil && perr == nil && n > 0 && n <= 65535 && !strings.Contains(host, "@")
}

// sameAddr: a and b name one fixed port (":0" picks a free one each time).
func sameAddr(a, b string) bool {
	return a != "" && a == b && !strings.HasSuffix(a, ":0")
}
