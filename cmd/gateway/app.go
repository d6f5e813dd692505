package main

import (
	"cmp"
	"context"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/redis/go-redis/v9"
	"github.com/wechatpay-apiv3/wechatpay-go/utils"
	"golang.org/x/net/netutil"
	"gorm.io/gorm"

	"paygateway/gateway"
	"paygateway/gateway/redisstore"
	"paygateway/gateway/wechatpay"
	"paygateway/ledger"
	"paygateway/ledger/ledgerdb"
	"paygateway/migrations"
)

// Main is a wired gateway: end-to-end tests start it on ":0".
type Main struct {
	Config    Config
	Store     *ledger.Store
	Processor *gateway.Processor
	Deps      *gateway.Deps
	Redis     *redis.Client // nil without Redis
	Metrics   *gateway.Metrics

	Refunds *gateway.RefundService // nil when the refund API is off
	Wechat  *wechatpay.Client      // nil without a merchant key

	// MigrateTimeout bounds the migrations at start; default 90 s.
	// `gateway migrate` lifts it: a long index build on a big table must
	// not be cut short there.
	MigrateTimeout time.Duration
	// NoMigrate: an admin command (apikey, reconcile, outbox replay) does
	// not change the schema as a side effect (a newer image's migrations,
	// a backfill meant for a quiet hour); it refuses a database that lacks
	// this binary's migrations instead.
	NoMigrate bool

	server   *http.Server
	inFlight requests    // the requests being served (see shutdown)
	draining atomic.Bool // /readyz answers 503 (see drain)
	listener net.Listener
	clock    *ledger.DBClock
	notifyDB *gorm.DB     // MySQL: the notifications' own pool (nil: they use Store's)
	metrics  net.Listener // nil: /metrics is on listener
	notify   net.Listener // nil: no http.notify_addr
	// notifyServer serves notify (nil without it).
	notifyServer *http.Server
	// notices verifies WeChat Pay's notifications (see loadWechatPay).
	notices *wechatpay.Verifier
	limiter gateway.Limiter
	jobs    []func(ctx context.Context)
	// jobRestart is how long a job that panicked waits before it starts
	// again (see keepRunning); 0: defaultJobRestart.
	jobRestart time.Duration
	// certExpiry is each platform certificate's NotAfter, by serial.
	certExpiry map[string]time.Time
	closers    []func() error
}

// NewMain opens the database (applying migrations), connects Redis if
// configured, builds the router and binds the listener.
func NewMain(ctx context.Context, cfg Config) (*Main, error) {
	if err := cfg.loadSecrets(); err != nil {
		return nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := cfg.preflight(); err != nil {
		return nil, err
	}
	m := &Main{Config: cfg}
	if err := m.loadWechatPay(ctx); err != nil {
		return nil, err
	}
	if err := m.openStore(ctx); err != nil {
		m.Close()
		return nil, err
	}
	if err := m.wire(ctx); err != nil {
		m.Close()
		return nil, err
	}
	if err := m.wireRefunds(ctx); err != nil {
		m.Close()
		return nil, err
	}
	if err := m.listen(); err != nil {
		m.Close()
		return nil, err
	}
	return m, nil
}

// preflight refuses the settings wire and wireRefunds check that need no
// database before the database is opened and migrated: a release whose
// config is refused leaves the database as it found it.
func (c Config) preflight() error {
	if err := c.RateLimit.validate(); err != nil {
		return err
	}
	if _, err := gateway.ParseAPIKeys(c.Auth.APIKeys); err != nil {
		return fmt.Errorf("config: auth.api_keys (GATEWAY_API_KEYS): %w", err)
	}
	if _, err := c.Redis.tlsConfig(); c.Redis.Addr != "" && err != nil {
		return err
	}
	if _, _, err := c.Finance.dailyAt(); err != nil {
		return err
	}
	m := &Main{Config: c}
	if err := m.refundConfig().Check(); err != nil {
		return fmt.Errorf("config: refunds.%w", err)
	}
	if !c.Refunds.JWT.configured() {
		return nil
	}
	_, err := m.refundAuth()
	return err
}

// maxHeaderBytes caps request headers (net/http's default is 1 MiB); a
// user JWT or WeChat Pay's signature headers take a few KiB.
const maxHeaderBytes = 32 << 10

// dbTime reads the synced database clock; tests wrap it to play a
// database whose clock differs from this host's.
var dbTime = func(c *ledger.DBClock) func() time.Time { return c.Now }

func (m *Main) openStore(ctx context.Context) error {
	d := m.Config.Database
	cfg := ledgerdb.Config{DSN: d.DSN, MaxOpenConns: d.maxOpenConns(),
		MaxIdleConns: d.MaxIdleConns, ConnMaxLifetime: d.ConnMaxLifetime,
		ConnMaxIdleTime: d.ConnMaxIdleTime, DialTimeout: d.DialTimeout,
		ReadTimeout: d.ReadTimeout, WriteTimeout: d.WriteTimeout, LockWaitTimeout: d.LockWaitTimeout,
		StatementTimeout: d.StatementTimeout, TLSCAFile: d.TLSCAFile}
	mysql := strings.HasPrefix(d.DSN, "mysql://")
	if mysql { // the rest is the notifications' (see openNotifyPool)
		cfg.MaxOpenConns = max(1, cfg.MaxOpenConns-m.Config.notifyPool())
	}
	db, dialect, err := ledgerdb.OpenContext(ctx, cfg)
	if err != nil {
		return err
	}
	sqlDB, err := db.DB()
	if err != nil {
		return err
	}
	m.closers = append(m.closers, sqlDB.Close)
	limit := cmp.Or(m.MigrateTimeout, 90*time.Second)
	mctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	if err := m.migrateOrCheck(mctx, d, limit, sqlDB, dialect); err != nil {
		return err
	}
	warnNotDurable(mctx, sqlDB, dialect)
	clock := ledger.NewDBClock(db, dialect)
	if err := clock.Sync(mctx); err != nil {
		return err
	}
	m.clock = clock
	db.NowFunc = dbTime(clock)
	if mysql {
		if err := m.openNotifyPool(ctx, cfg); err != nil {
			return err
		}
	}
	m.Store = ledger.NewStore(db, dialect).WithClock(dbTime(clock))
	m.AddJob(func(ctx context.Context) { clock.Run(ctx, time.Minute, 5*time.Second) })
	if off := clock.Offset(); off.Abs() > time.Second {
		slog.Warn("this host's clock differs from the database's; leases and deadlines follow the database",
			"offset", off.String())
	}
	return nil
}

// openNotifyPool opens the notifications' own pool on MySQL: payment and
// refund callbacks get connections nothing else can take, so a flood of
// order registrations or refund requests on a slow database cannot turn
// WeChat Pay's deliveries into 503s.
func (m *Main) openNotifyPool(ctx context.Context, cfg ledgerdb.Config) error {
	cfg.MaxOpenConns, cfg.MaxIdleConns = m.Config.notifyPool(), m.Config.notifyPool()
	db, _, err := ledgerdb.OpenContext(ctx, cfg)
	if err != nil {
		return fmt.Errorf("notification pool: %w", err)
	}
	sqlDB, err := db.DB()
	if err != nil {
		return err
	}
	m.closers = append(m.closers, sqlDB.Close)
	db.NowFunc = dbTime(m.clock)
	m.notifyDB = db
	return nil
}

// notifyStore is the store notifications are recorded through: Store,
// on the notifications' own pool when there is one.
func (m *Main) notifyStore() *ledger.Store {
	if m.notifyDB == nil {
		return m.Store
	}
	return m.Store.WithDB(m.notifyDB)
}

// migrateOrCheck applies the pending migrations, or with NoMigrate
// refuses a database that lacks some.
func (m *Main) migrateOrCheck(ctx context.Context, d DatabaseConfig, limit time.Duration, db *sql.DB, dialect migrations.Dialect) error {
	if !m.NoMigrate {
		if err := applyMigrations(ctx, d, limit); err != nil {
			return err
		}
		return checkMigrated(ctx, db, dialect)
	}
	n, err := migrations.Pending(ctx, db, dialect)
	if err != nil {
		return err
	}
	if all, _ := migrations.List(dialect); n == len(all) { // a mistyped path, not an old gateway database
		return errors.New("the database named is not a gateway database (no migration applied): " +
			"check --config and GATEWAY_DATABASE_DSN")
	}
	if n > 0 {
		return fmt.Errorf("the database lacks %d of this binary's migrations: run `gateway migrate` first "+
			"(an admin command does not change the schema)", n)
	}
	return nil
}

// applyMigrations applies the pending migrations on a connection of its own,
// whose reads may last as long as the migration may: an index build on a
// big table is silent for minutes, and the pool's read_timeout would cut
// it off while the server carries on.
func applyMigrations(ctx context.Context, d DatabaseConfig, limit time.Duration) error {
	db, dialect, err := ledgerdb.OpenContext(ctx, ledgerdb.Config{DSN: d.DSN, MaxOpenConns: 1, DialTimeout: d.DialTimeout,
		ReadTimeout: limit, WriteTimeout: d.WriteTimeout, TLSCAFile: d.TLSCAFile})
	if err != nil {
		return err
	}
	sqlDB, err := db.DB()
	if err != nil {
		return err
	}
	defer sqlDB.Close()
	return ledger.Migrate(ctx, db, dialect)
}

func (m *Main) wire(ctx context.Context) error {
	if err := m.initObservability(); err != nil {
		return err
	}
	w := m.Config.WechatPay
	gate, locker, err := m.guards()
	if err != nil {
		return err
	}
	if err := m.checkGuards(ctx); err != nil {
		return err
	}
	keys, err := gateway.ParseAPIKeys(m.Config.Auth.APIKeys)
	if err != nil {
		return fmt.Errorf("config: auth.api_keys (GATEWAY_API_KEYS): %w", err)
	}
	if err := checkKeyNames(ctx, m.Store, m.Config.Auth.APIKeys); err != nil {
		return err
	}
	nc := m.Config.Notify
	m.Processor = gateway.NewProcessor(gateway.ProcessorConfig{MchID: w.MchID, AppID: w.AppID,
		BatchWorkers: nc.BatchWorkers, BatchMax: nc.BatchMax, BatchSpill: nc.BatchSpill,
		BatchObserve: m.Metrics.NotifyBatch},
		m.notices, gate, locker, m.notifyStore())
	m.closers = append(m.closers, m.Processor.Close)
	h := m.Config.HTTP
	auth := gateway.NewAuth(keys, m.dbKeys())
	auth.Failures, auth.FailureLimit, auth.Refused = m.limiter, m.Config.Auth.failureLimit(), m.Metrics.KeyRefused
	m.Deps = &gateway.Deps{Processor: m.Processor, Store: m.Store, Auth: auth,
		MaxBodyBytes: h.MaxBodyBytes, NotifyTimeout: h.NotifyTimeout, APITimeout: h.APITimeout,
		Metrics: m.Metrics, MetricsElsewhere: m.Config.HTTP.MetricsAddr != "", Limiter: m.limiter,
		Limits: m.Config.RateLimit.limits(), TrustedProxies: h.TrustedProxies,
		MaxBackOffice: m.Config.Finance.maxRequests()}
	if err := m.wireOutbox(ctx); err != nil {
		return err
	}
	return m.wireFinance(ctx)
}

// loadWechatPay reads the WeChat Pay keys and platform certificates (loaded,
// and warned about, once for notifications and answers alike) and builds
// the notification verifier and the API client. It runs before the
// database is opened: a release whose key files are missing or unreadable,
// or whose merchant settings are refused, leaves the database as it found
// it (see preflight).
func (m *Main) loadWechatPay(ctx context.Context) error {
	w := m.Config.WechatPay
	certs, live, err := loadCerts(w.PlatformCertFiles, time.Now())
	if err != nil {
		return err
	}
	if m.notices, err = newVerifier(w, certs, live); err != nil {
		return err
	}
	m.certExpiry = make(map[string]time.Time, len(certs))
	for _, c := range certs {
		m.certExpiry[utils.GetCertificateSerialNumber(*c)] = c.NotAfter
	}
	m.Wechat, err = newWechatClientWith(ctx, w, certs)
	return err
}

// memoryGateSize bounds each of the in-process gate's caches (nonces,
// committed notification ids): about 200 bytes an entry.
const memoryGateSize = 200_000

// guards returns the notification gate and the locker: Redis with an
// in-process fallback when Redis is configured, in-process only otherwise.
func (m *Main) guards() (gateway.Gate, gateway.Locker, error) {
	memLocks := gateway.NewMemoryLocker()
	memGate := gateway.NewMemoryGate(memoryGateSize, memLocks)
	m.Metrics.RegisterMemoryGate(memGate)
	r := m.Config.Redis
	if r.Addr == "" {
		return memGate, memLocks, nil
	}
	tlsConfig, err := r.tlsConfig()
	if err != nil {
		return nil, nil, err
	}
	rc := redisstore.Config{Addr: r.Addr, Username: r.Username, Password: r.Password, TLS: tlsConfig, DB: r.DB,
		Prefix: r.Prefix, PoolSize: r.PoolSize,
		DialTimeout: r.DialTimeout, ReadTimeout: r.ReadTimeout, WriteTimeout: r.WriteTimeout,
		PoolTimeout: r.PoolTimeout, OpTimeout: r.OpTimeout, FinishDelay: r.FinishDelay, Observe: m.Metrics.ObserveRedis}
	m.Redis = redisstore.NewClient(rc)
	m.closers = append(m.closers, m.Redis.Close)
	rs := redisstore.New(m.Redis, rc)
	m.closers = append(m.closers, rs.Close)
	hook, breaker := m.Metrics.RedisFallback, &gateway.Breaker{Cooldown: r.BreakerCooldown}
	m.limiter = gateway.FallbackLimiter{Primary: rs, Secondary: m.limiter, Hook: hook, Breaker: breaker,
		Budget: rc.Wait(), Instances: r.Instances}
	return gateway.FallbackGate{Primary: rs, Secondary: memGate, Hook: hook, Breaker: breaker},
		gateway.FallbackLocker{Primary: rs, Secondary: memLocks, Hook: hook, Breaker: breaker}, nil
}

// tlsConfig is the TLS spoken to Redis: nil without redis.tls; with it,
// Redis's certificate is verified against redis.tls_ca_file, or the
// system's roots, and the name in redis.addr.
func (r RedisConfig) tlsConfig() (*tls.Config, error) {
	if !r.TLS {
		return nil, nil
	}
	host, _, err := net.SplitHostPort(r.Addr)
	if err != nil {
		host = "" // a unix socket: no name to check (a CA file still must sign the certificate)
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: host}
	if r.TLSCAFile == "" {
		return c, nil
	}
	pem, err := os.ReadFile(r.TLSCAFile)
	if err != nil {
		return nil, fmt.Errorf("config: redis.tls_ca_file: %w", err)
	}
	c.RootCAs = x509.NewCertPool()
	if !c.RootCAs.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("config: redis.tls_ca_file %s: no PEM certificate in it", r.TLSCAFile)
	}
	return c, nil
}

// newVerifier builds the notification verifier from the public key file
// and the platform certificates loadCerts read (live of them in force).
func newVerifier(w WechatPayConfig, certs []*x509.Certificate, live int) (*wechatpay.Verifier, error) {
	cfg := wechatpay.NotifyConfig{APIv3Key: w.APIv3Key, PreviousAPIv3Key: w.PreviousAPIv3Key, PublicKeyID: w.PublicKeyID}
	if w.PublicKeyFile != "" {
		pub, err := utils.LoadPublicKeyWithPath(w.PublicKeyFile)
		if err != nil {
			return nil, fmt.Errorf("config: wechatpay.public_key_file: %w", err)
		}
		cfg.PublicKey = pub
	}
	if live == 0 && len(certs) > 0 && cfg.PublicKey == nil {
		// As with no key at all: a gateway that can verify no callback
		// does not start.
		return nil, fmt.Errorf("config: wechatpay.platform_cert_files: every platform certificate has expired " +
			"and wechatpay.public_key_file is not set: configure the WeChat Pay public key or a current platform certificate")
	}
	cfg.Certificates = certs
	return wechatpay.NewVerifier(cfg)
}

// certWarnAhead is how long before a platform certificate's NotAfter the
// start warns of it.
const certWarnAhead = 30 * 24 * time.Hour

// loadCerts reads the platform certificates and counts those not expired
// at now. An expired one is kept (the verifier refuses what it signs, and
// says why) and named in a warning: the README has operators keep the
// files of rotated certificates, and WeChat Pay no longer guards a
// retired certificate's key. A certificate not yet valid is kept too:
// it comes into force by itself.
func loadCerts(paths []string, now time.Time) (certs []*x509.Certificate, live int, err error) {
	for _, p := range paths {
		c, err := utils.LoadCertificateWithPath(p)
		if err != nil {
			return nil, 0, fmt.Errorf("config: wechatpay.platform_cert_files %s: %w", p, err)
		}
		serial := utils.GetCertificateSerialNumber(*c)
		switch {
		case wechatpay.CertificateExpired(c, now):
			slog.Warn("platform certificate has expired: notifications and answers signed with it are refused; remove it from wechatpay.platform_cert_files",
				"file", p, "serial", serial, "not_after", c.NotAfter.UTC().Format(time.RFC3339))
		case now.Before(c.NotBefore):
			live++
			slog.Warn("platform certificate is not valid yet: notifications and answers signed with it are refused until not_before",
				"file", p, "serial", serial, "not_before", c.NotBefore.UTC().Format(time.RFC3339))
		case now.Add(certWarnAhead).After(c.NotAfter):
			live++
			slog.Warn("platform certificate expires within 30 days: add its successor to wechatpay.platform_cert_files (or set the public key) and restart",
				"file", p, "serial", serial, "not_after", c.NotAfter.UTC().Format(time.RFC3339))
		default:
			live++
		}
		certs = append(certs, c)
	}
	return certs, live, nil
}

func loadMerchantKey(path string) (*rsa.PrivateKey, error) {
	const field = "wechatpay.merchant_private_key_file (GATEWAY_WECHATPAY_MERCHANT_PRIVATE_KEY_FILE)"
	b, err := readSecretFile(field, path) // not utils.LoadPrivateKeyWithPath: its error quotes the path
	if err != nil {
		return nil, err
	}
	key, err := utils.LoadPrivateKey(string(b))
	if err != nil {
		return nil, fmt.Errorf("config: %s: %w", field, err)
	}
	return key, nil
}

func (m *Main) listen() error {
	ln, err := net.Listen("tcp", m.Config.HTTP.Addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", m.Config.HTTP.Addr, err)
	}
	m.listener = ln
	m.closers = append(m.closers, func() error { _ = ln.Close(); return nil })
	if addr := m.Config.HTTP.NotifyAddr; addr != "" {
		if m.notify, err = net.Listen("tcp", addr); err != nil {
			return fmt.Errorf("listen on http.notify_addr %s: %w", addr, err)
		}
		m.closers = append(m.closers, func() error { _ = m.notify.Close(); return nil })
	}
	if addr := m.Config.HTTP.MetricsAddr; addr != "" {
		if m.metrics, err = net.Listen("tcp", addr); err != nil {
			return fmt.Errorf("listen on http.metrics_addr %s: %w", addr, err)
		}
		m.closers = append(m.closers, func() error { _ = m.metrics.Close(); return nil })
	}
	return nil
}

// MetricsURL is where /metrics is served: its own listener when
// http.metrics_addr is set, else the gateway's.
func (m *Main) MetricsURL() string {
	if m.metrics != nil {
		return "http://" + m.metrics.Addr().String() + "/metrics"
	}
	return m.URL() + "/metrics"
}

// NotifyAddr is the address of the notification listener, "" without one.
func (m *Main) NotifyAddr() string {
	if m.notify == nil {
		return ""
	}
	return m.notify.Addr().String()
}

// Addr is the address the gateway listens on (useful with ":0").
func (m *Main) Addr() string { return m.listener.Addr().String() }

// URL is the base URL of the gateway.
func (m *Main) URL() string { return "http://" + m.Addr() }

// AddJob registers a background job; it runs until Run's ctx ends.
func (m *Main) AddJob(job func(ctx context.Context)) { m.jobs = append(m.jobs, job) }

// Run serves HTTP and runs the jobs until ctx ends, then shuts down:
// stop accepting, let in-flight requests and jobs finish (bounded).
func (m *Main) Run(ctx context.Context) error {
	gin.SetMode(gin.ReleaseMode)
	h := m.Config.HTTP
	m.Deps.Draining = &m.draining
	handler := m.inFlight.track(gateway.NewRouter(*m.Deps))
	jobCtx, stopJobs := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	for _, job := range m.jobs {
		wg.Add(1)
		go func() { defer wg.Done(); keepRunning(jobCtx, job, cmp.Or(m.jobRestart, defaultJobRestart)) }()
	}
	errc := make(chan error, 2)
	m.server = m.serve(jobCtx, handler, m.listener, "public", h.MaxConnections, m.inFlight.base, errc)
	if m.notify != nil {
		base := func(l net.Listener) context.Context { return gateway.OnNotifyListener(m.inFlight.base(l)) }
		m.notifyServer = m.serve(jobCtx, handler, m.notify, "notify", h.NotifyMaxConnections, base, errc)
	}
	if h.PprofAddr != "" {
		stopPprof := servePprof(h.PprofAddr)
		defer stopPprof()
	}
	if m.metrics != nil {
		mux := http.NewServeMux()
		mux.Handle("/metrics", m.Metrics.Handler())
		stopMetrics := serveInternal("metrics", m.metrics, mux)
		defer stopMetrics()
	}
	slog.Info("gateway listening", "addr", m.Addr(), "notify_addr", m.NotifyAddr(), "dialect", m.Store.Dialect(),
		"redis", m.Config.Redis.Addr != "")
	var err error
	select {
	case err = <-errc:
	case <-ctx.Done():
		m.drain() // not when serving failed: there is no listener to drain
	}
	m.shutdown(stopJobs, &wg)
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// serve serves handler on ln (capped at max connections open, idle ones
// shed near the cap) until shutdown; Serve's error goes to errc.
func (m *Main) serve(ctx context.Context, handler http.Handler, ln net.Listener, name string, max int,
	base func(net.Listener) context.Context, errc chan<- error) *http.Server {
	h := m.Config.HTTP
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: h.ReadHeaderTimeout,
		ReadTimeout: h.ReadTimeout, WriteTimeout: h.WriteTimeout, IdleTimeout: h.IdleTimeout,
		MaxHeaderBytes: maxHeaderBytes, BaseContext: base}
	shed := newConnShedder(srv, name, max, m.Metrics)
	go shed.watch(ctx)
	// Bounded like every other resource: a flood of connections waits in
	// the accept queue instead of taking memory and file descriptors.
	capped := netutil.LimitListener(ln, max)
	go func() { errc <- srv.Serve(capped) }()
	return srv
}

// servePprof serves the profiler on addr until the returned func runs.
func servePprof(addr string) func() {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		slog.Warn("pprof server", "addr", addr, "err", err)
		return func() {}
	}
	return serveInternal("pprof", ln, mux)
}

// serveInternal serves h on ln (an internal listener: metrics, pprof)
// until the returned func runs.
func serveInternal(name string, ln net.Listener, h http.Handler) func() {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
		WriteTimeout: 30 * time.Second, IdleTimeout: 60 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			slog.Warn(name+" server", "addr", ln.Addr().String(), "err", err)
		}
	}()
	return func() { _ = srv.Close() }
}

// shutdown stops the jobs as soon as it begins, so no worker claims work
// (or starts an attempt) while requests drain and each attempt under way
// gets the whole shutdown_timeout to finish and be stored; then it lets
// in-flight requests finish. Both are bounded by shutdown_timeout; requests
// still running then are cut off and get cutOffGrace more to clean up. A
// refund past its key's claim, or a janitor check, ignores the cut-off: it
// gets up to its own budget (RefundService.Drain) before the database
// closes.
func (m *Main) shutdown(stopJobs func(), wg *sync.WaitGroup) {
	sctx, cancel := context.WithTimeout(context.Background(), m.Config.HTTP.ShutdownTimeout)
	defer cancel()
	stopJobs()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	if err := m.shutdownServers(sctx); err != nil {
		slog.Warn("http shutdown: cutting off the requests still running", "err", err)
		m.inFlight.cutOff(cutOffGrace)
	}
	select {
	case <-done:
	case <-sctx.Done():
		select {
		case <-done: // both were ready: select picked at random
		default:
			slog.Warn("jobs did not stop within the shutdown timeout")
		}
	}
	if m.Refunds != nil && !m.Refunds.Drain() {
		slog.Warn("refunds still running at their budget's end; the janitor settles them", "budget", m.Refunds.WorkBudget())
	}
}

// shutdownServers stops both listeners at once and waits for their
// requests until sctx ends.
func (m *Main) shutdownServers(sctx context.Context) error {
	if m.notifyServer == nil {
		return m.server.Shutdown(sctx)
	}
	notifyErr := make(chan error, 1)
	go func() { notifyErr <- m.notifyServer.Shutdown(sctx) }()
	err := m.server.Shutdown(sctx)
	return errors.Join(err, <-notifyErr)
}

// drain, with http.drain_delay set, keeps serving that long with /readyz
// answering 503, so that a load balancer polling it stops sending new
// requests before the listener closes. Jobs keep running meanwhile;
// shutdown stops them after it. The whole stop then takes up to
// drain_delay + shutdown_timeout + cutOffGrace: the process manager's
// kill deadline must be longer.
// A second SIGTERM or interrupt cuts the drain short: whoever sends it
// wants the instance gone now.
func (m *Main) drain() {
	d := m.Config.HTTP.DrainDelay
	if d <= 0 {
		return
	}
	again := make(chan os.Signal, 1)
	signal.Notify(again, os.Interrupt, syscall.SIGTERM) // before /readyz says so
	defer signal.Stop(again)
	m.draining.Store(true)
	slog.Info("draining: /readyz answers 503 before the listener closes", "drain_delay", d)
	select {
	case <-time.After(d):
	case <-again:
		slog.Warn("second stop signal: drain cut short")
	}
}

// cutOffGrace is how long requests cut off at the end of the shutdown
// timeout get to clean up (a reconciliation hands its day's lease back)
// before the database closes under them.
const cutOffGrace = 5 * time.Second

// requests tracks the requests being served. http.Server.Shutdown only
// waits for them; at its timeout, cutOff cancels their contexts and waits
// (bounded) for them to return, so none is still writing when the
// database closes.
type requests struct {
	wg     sync.WaitGroup
	once   sync.Once
	ctx    context.Context
	cancel context.CancelFunc
}

func (q *requests) init() {
	q.once.Do(func() { q.ctx, q.cancel = context.WithCancel(context.Background()) })
}

// base is the server's BaseContext: every request's context derives from it.
func (q *requests) base(net.Listener) context.Context {
	q.init()
	return q.ctx
}

func (q *requests) track(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q.wg.Add(1)
		defer q.wg.Done()
		h.ServeHTTP(w, r)
	})
}

func (q *requests) cutOff(grace time.Duration) {
	q.init()
	q.cancel()
	done := make(chan struct{})
	go func() { q.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(grace):
		slog.Warn("requests still running after being cut off", "grace", grace)
	}
}

// Close releases the database and Redis.
func (m *Main) Close() error {
	var errs []error
	for i := len(m.closers) - 1; i >= 0; i-- {
		errs = append(errs, m.closers[i]())
	}
	m.closers = nil
	return errors.Join(errs...)
}
