package gateway

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"paygateway/ledger"
)

// Metrics holds the gateway's Prometheus collectors in a registry of its
// own, so several gateways can run in one process (tests) without
// clashing on the global default registry. A nil *Metrics is valid and
// records nothing.
type Metrics struct {
	Registry *prometheus.Registry

	Requests       *prometheus.CounterVec   // gateway_http_requests_total{route,method,code}
	Latency        *prometheus.HistogramVec // gateway_http_request_duration_seconds{route,method}
	Notifications  *prometheus.CounterVec   // gateway_notifications_total{kind,outcome}
	RedisCalls     *prometheus.HistogramVec // gateway_redis_call_seconds{op,result}
	RedisFallbacks *prometheus.CounterVec   // gateway_redis_fallbacks_total{what}
	RateLimited    *prometheus.CounterVec   // gateway_rate_limited_total{route}
	NotifyBatches  *prometheus.HistogramVec // gateway_notify_batch_size{mode}
	OutboxAttempts *prometheus.CounterVec   // gateway_outbox_attempts_total{outcome}
	RefundMoves    *prometheus.CounterVec   // gateway_refund_transitions_total{state}
	Compensation   *prometheus.CounterVec   // gateway_compensation_checks_total{result}
	WrongKeys      *prometheus.CounterVec   // gateway_api_key_refusals_total{reason}
	JWTPrevious    prometheus.Counter       // gateway_jwt_previous_key_accepted_total
	APIv3Previous  *prometheus.CounterVec   // gateway_notifications_previous_apiv3_key_total{kind}
}

// redisBuckets resolve the region around the Redis op timeout (250 ms by
// default) finely enough to show that no call outlives it.
var redisBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .15, .2, .25, .3, .4, .5, .75, 1, 2.5}

// NewMetrics builds the collectors and registers them, together with the
// Go runtime and process collectors, on a new registry.
func NewMetrics() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gateway_http_requests_total",
			Help: "HTTP requests by route template, method and status code."}, []string{"route", "method", "code"}),
		Latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "gateway_http_request_duration_seconds",
			Help: "HTTP request latency by route template.", Buckets: prometheus.DefBuckets}, []string{"route", "method"}),
		Notifications: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gateway_notifications_total",
			Help: "WeChat Pay notifications by kind and outcome (success, duplicate or the error code)."},
			[]string{"kind", "outcome"}),
		RedisCalls: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "gateway_redis_call_seconds",
			Help: "Time spent in each Redis call, including pool wait and retries.", Buckets: redisBuckets},
			[]string{"op", "result"}),
		RedisFallbacks: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gateway_redis_fallbacks_total",
			Help: "Redis-backed guards that fell back to in-process structures."}, []string{"what"}),
		RateLimited: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gateway_rate_limited_total",
			Help: "Requests refused with 429 ERATE_LIMITED, by route template."}, []string{"route"}),
		NotifyBatches: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "gateway_notify_batch_size",
			Help: "Payment notifications per ledger commit; mode is batched (one transaction) or single " +
				"(applied one by one, alone or after a batch fell back).",
			Buckets: []float64{1, 2, 4, 8, 16, 32, 64}}, []string{"mode"}),
		OutboxAttempts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gateway_outbox_attempts_total",
			Help: "Outbox attempts this instance made and stored, by outcome (done, skipped, retry, dead)."}, []string{"outcome"}),
		RefundMoves: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gateway_refund_transitions_total",
			Help: "Refund state changes this instance committed (creation included), by the state reached; sum across instances."},
			[]string{"state"}),
	}
	m.Compensation = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gateway_compensation_checks_total",
		Help: "Lost-callback checks of registered orders by result: recovered (paid at WeChat Pay, no callback came: " +
			"alert when it rises), closed, open (nothing to do: still unpaid, or the callback came meanwhile), " +
			"failed (WeChat Pay did not answer, or the ledger could not record its answer), " +
			"mismatch (paid in a currency other than CNY: refused, flagged, asked again daily), " +
			"limited (WeChat Pay rate-limited the query: the run stopped there)."},
		[]string{"result"})
	for _, r := range []string{"recovered", "closed", "open", "failed", "mismatch", "limited"} {
		m.Compensation.WithLabelValues(r)
	}
	m.WrongKeys = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gateway_api_key_refusals_total",
		Help: "API keys refused: unknown (401), or locked_out (429: the address sent too many unknown keys). " +
			"A rise in either is someone guessing keys, or a client with a revoked one."}, []string{"reason"})
	for _, r := range []string{KeyUnknown, KeyLockedOut} {
		m.WrongKeys.WithLabelValues(r)
	}
	m.JWTPrevious = prometheus.NewCounter(prometheus.CounterOpts{Name: "gateway_jwt_previous_key_accepted_total",
		Help: "User tokens taken under refunds.jwt's previous key. Once the backend signs with the current one, " +
			"flat for refunds.jwt.max_lifetime on every instance: the previous key can be removed."})
	m.APIv3Previous = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gateway_notifications_previous_apiv3_key_total",
		Help: "WeChat Pay notifications only wechatpay.previous_apiv3_key could decrypt, by kind. " +
			"Remove that key once this has stayed flat past WeChat Pay's 24 h redelivery window."}, []string{"kind"})
	for _, kind := range []string{"payment", "refund"} {
		m.APIv3Previous.WithLabelValues(kind)
	}
	for _, st := range []ledger.RefundState{ledger.RefundCreated, ledger.RefundProcessing, ledger.RefundUnknown,
		ledger.RefundSuccess, ledger.RefundClosed, ledger.RefundAbnormal, ledger.RefundFailed} {
		m.RefundMoves.WithLabelValues(string(st)) // present at 0, so rates work from the start
	}
	m.Registry.MustRegister(m.Requests, m.Latency, m.Notifications, m.RedisCalls, m.RedisFallbacks, m.RateLimited,
		m.NotifyBatches, m.OutboxAttempts, m.RefundMoves, m.Compensation, m.WrongKeys, m.JWTPrevious, m.APIv3Previous,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// KeyRefused records an API key refused for reason (KeyUnknown or
// KeyLockedOut).
func (m *Metrics) KeyRefused(reason string) {
	if m != nil {
		m.WrongKeys.WithLabelValues(reason).Inc()
	}
}

// PreviousJWTKey records a user token taken under the previous key.
func (m *Metrics) PreviousJWTKey() {
	if m != nil {
		m.JWTPrevious.Inc()
	}
}

// NotifyBatch records one group commit of payment notifications.
func (m *Metrics) NotifyBatch(size int, batched bool) {
	if m == nil {
		return
	}
	mode := "single"
	if batched {
		mode = "batched"
	}
	m.NotifyBatches.WithLabelValues(mode).Observe(float64(size))
}

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	if m == nil {
		return http.NotFoundHandler()
	}
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Registry: m.Registry, Timeout: 5 * time.Second,
		MaxRequestsInFlight: 2})
}

// Middleware counts every request by route template (c.FullPath(), so
// /v1/ledger/payments/:out_trade_no is one series) and records latency.
func (m *Metrics) Middleware() gin.HandlerFunc {
	if m == nil {
		return func(c *gin.Context) { c.Next() }
	}
	return func(c *gin.Context) {
		start, finished := time.Now(), false
		// Deferred, so a request cut off by a panic (an export aborted
		// midway) is counted too, with code "aborted".
		defer func() {
			route := c.FullPath()
			if route == "" {
				route = "unmatched" // never the raw path: it would make unbounded series
			}
			code, method := "aborted", methodLabel(c.Request.Method)
			if finished {
				code = strconv.Itoa(c.Writer.Status())
			}
			m.Requests.WithLabelValues(route, method, code).Inc()
			m.Latency.WithLabelValues(route, method).Observe(time.Since(start).Seconds())
			if c.GetBool(rateLimitedKey) {
				m.RateLimited.WithLabelValues(route).Inc()
			}
		}()
		c.Next()
		finished = true
	}
}

// methodLabel is the request method as a metric label or log field: the
// standard ones as they are, anything else "OTHER" (Go's server takes any
// token as a method, and each would be a new series).
func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions:
		return m
	}
	return "OTHER"
}

// Notification counts the outcome of each notification on the routes it
// wraps (kind is "payment", "refund", …): "success" for a first
// recording, "duplicate" when the ledger already had it (see
// NoteDuplicate), else the error code answered (ESIGNATURE, EREPLAY, …).
func (m *Metrics) Notification(kind string) gin.HandlerFunc {
	return func(c *gin.Context) {
		ctx, mark := withNoticeMark(c.Request.Context())
		c.Request = c.Request.WithContext(ctx)
		finished := false
		defer func() { // a panicking notification is counted as EINTERNAL
			if m == nil {
				return
			}
			outcome := "success"
			switch code := c.GetString(errorCodeKey); {
			case !finished:
				outcome = CodeInternal
			case code != "":
				outcome = code
			case c.Writer.Status() >= 300:
				outcome = "status_" + strconv.Itoa(c.Writer.Status())
			case mark.dup.Load():
				outcome = "duplicate"
			}
			m.Notifications.WithLabelValues(kind, outcome).Inc()
			if mark.prevKey.Load() {
				m.APIv3Previous.WithLabelValues(kind).Inc()
			}
		}()
		c.Next()
		finished = true
	}
}

// ObserveRedis records how long one Redis call took.
func (m *Metrics) ObserveRedis(op string, d time.Duration, err error) {
	if m == nil {
		return
	}
	result := "ok"
	if err != nil {
		result = "error"
	}
	m.RedisCalls.WithLabelValues(op, result).Observe(d.Seconds())
}

// RedisFallback counts one fallback to the in-process guard.
func (m *Metrics) RedisFallback(what string) {
	if m != nil {
		m.RedisFallbacks.WithLabelValues(what).Inc()
	}
}

// RegisterClock adds gateway_db_clock_offset_seconds: how far the
// database's clock was ahead of this host's at the last sync. Leases run
// on the database's clock either way; a large value means this host's
// clock needs looking at.
func (m *Metrics) RegisterClock(offset func() time.Duration) {
	if m == nil {
		return
	}
	m.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "gateway_db_clock_offset_seconds",
		Help: "How far the database's clock was ahead of this host's at the last sync."},
		func() float64 { return offset().Seconds() }))
}

// RegisterMemoryGate adds gateway_memory_gate_entries: the nonces and
// committed notification ids the in-process gate holds beside Redis (or
// instead of it). They grow until the gate's bound, then stay: a soak
// reads them to tell that growth of the heap from a leak.
func (m *Metrics) RegisterMemoryGate(g *MemoryGate) {
	if m == nil {
		return
	}
	for _, kind := range []string{"nonces", "committed"} {
		m.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "gateway_memory_gate_entries",
			Help:        "Entries the in-process notification gate holds (nonces seen, notification ids committed here).",
			ConstLabels: prometheus.Labels{"kind": kind}},
			func() float64 {
				nonces, committed := g.Entries()
				if kind == "nonces" {
					return float64(nonces)
				}
				return float64(committed)
			}))
	}
}

// RegisterCertificateExpiry adds
// gateway_platform_certificate_expiry_timestamp_seconds{serial}: when each
// platform certificate the gateway read at start stops being used (its
// NotAfter, Unix seconds). The gateway never downloads or refreshes them,
// so a rotation missed shows here weeks before notifications signed with
// the new certificate are refused.
func (m *Metrics) RegisterCertificateExpiry(notAfter map[string]time.Time) {
	if m == nil {
		return
	}
	for serial, at := range notAfter {
		g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "gateway_platform_certificate_expiry_timestamp_seconds",
			Help:        "NotAfter (Unix seconds) of each WeChat Pay platform certificate read at start.",
			ConstLabels: prometheus.Labels{"serial": serial}})
		g.Set(float64(at.Unix()))
		m.Registry.MustRegister(g)
	}
}

// RegisterLogDrops adds the count of log lines dropped because the log
// output was too slow (see LogWriter).
func (m *Metrics) RegisterLogDrops(dropped func() uint64) {
	if m == nil {
		return
	}
	m.Registry.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "gateway_log_lines_dropped_total",
		Help: "Log lines dropped because the log output did not keep up."},
		func() float64 { return float64(dropped()) }))
}

// RegisterDB adds the connection pool statistics of db
// (go_sql_* series) and the ledger gauges read from it on each scrape;
// ages are taken on now, the clock the ledger writes with.
func (m *Metrics) RegisterDB(db *sql.DB, now func() time.Time) {
	if m == nil {
		return
	}
	m.Registry.MustRegister(collectors.NewDBStatsCollector(db, "ledger"), newLedgerCollector(db, now))
}

// RegisterPool adds the statistics of another connection pool
// (go_sql_* series with db_name="name").
func (m *Metrics) RegisterPool(db *sql.DB, name string) {
	if m == nil {
		return
	}
	m.Registry.MustRegister(collectors.NewDBStatsCollector(db, name))
}

// noticeMark is what NoteDuplicate and NotePreviousKey set on the
// request context, for the notification metrics.
type noticeMark struct{ dup, prevKey atomic.Bool }

type noticeMarkKey struct{}

func withNoticeMark(ctx context.Context) (context.Context, *noticeMark) {
	d := &noticeMark{}
	return context.WithValue(ctx, noticeMarkKey{}, d), d
}

// NoteDuplicate tells the notification metrics that the request was a
// replay the ledger already had (answered 2xx, nothing changed).
func NoteDuplicate(ctx context.Context) {
	if d, ok := ctx.Value(noticeMarkKey{}).(*noticeMark); ok {
		d.dup.Store(true)
	}
}

// NotePreviousKey tells the notification metrics that only the previous
// APIv3 key could decrypt the request's notification.
func NotePreviousKey(ctx context.Context) {
	if d, ok := ctx.Value(noticeMarkKey{}).(*noticeMark); ok {
		d.prevKey.Store(true)
	}
}

// ledgerCollector reads refund, outbox and dead-letter gauges with plain
// SQL counts (bounded by a short timeout), so it works whatever code
// writes those tables. A reading is kept for ledgerGaugeTTL and scrapes
// share it: a flood of scrapes costs the database one reading, not its
// aggregate queries each, and cannot take the pool from notifications.
type ledgerCollector struct {
	db  *sql.DB
	now func() time.Time // the ledger's clock

	refunds, refundOldest, outboxJobs, outboxOldest, outboxDueLag *prometheus.Desc
	anomalies, openAnomalies, reconDays, scrapeE                  *prometheus.Desc

	mu     sync.Mutex
	readAt time.Time
	last   []prometheus.Metric
}

// ledgerGaugeTTL is how long a reading of the ledger gauges is reused.
const ledgerGaugeTTL = 10 * time.Second

func newLedgerCollector(db *sql.DB, now func() time.Time) *ledgerCollector {
	return &ledgerCollector{db: db, now: now,
		refunds: prometheus.NewDesc("gateway_refunds",
			"Refunds not finished, by state (CREATED, PROCESSING, UNKNOWN, ABNORMAL); finished ones are counted by gateway_refund_transitions_total.",
			[]string{"state"}, nil),
		refundOldest: prometheus.NewDesc("gateway_refunds_oldest_age_seconds",
			"Age of the oldest refund not finished, since it was requested, by state (no series when none is in it).",
			[]string{"state"}, nil),
		outboxJobs: prometheus.NewDesc("gateway_outbox_jobs",
			"Outbox jobs not done, by kind and state (state DEAD = dead letters).", []string{"kind", "state"}, nil),
		outboxOldest: prometheus.NewDesc("gateway_outbox_oldest_pending_age_seconds",
			"Age of the oldest outbox job not yet done or dead, by kind.", []string{"kind"}, nil),
		outboxDueLag: prometheus.NewDesc("gateway_outbox_due_lag_seconds",
			"How long the most overdue outbox job has been due and not taken, by kind: the workers' backlog "+
				"(the oldest pending age also counts jobs waiting out a backoff or replayed).", []string{"kind"}, nil),
		anomalies: prometheus.NewDesc("gateway_anomalies",
			"Anomalies flagged for a person, by kind (GET /v1/ledger/anomalies lists them); alert on any increase.",
			[]string{"kind"}, nil),
		openAnomalies: prometheus.NewDesc("gateway_anomalies_open",
			"Anomalies not yet resolved by a person (POST /v1/ledger/anomalies/{id}/resolve), by kind.",
			[]string{"kind"}, nil),
		reconDays: prometheus.NewDesc("gateway_reconciliation_days",
			"Days reconciled against WeChat Pay's bill, by the status of their report (MATCHED, MISMATCHED, NO_BILL, "+
				"UNREADABLE: alert when above 0, a person must act; PENDING: claimed, no report yet).", []string{"status"}, nil),
		scrapeE: prometheus.NewDesc("gateway_ledger_scrape_errors", "1 if reading ledger gauges failed.", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (l *ledgerCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{l.refunds, l.refundOldest, l.outboxJobs, l.outboxOldest, l.outboxDueLag, l.anomalies,
		l.openAnomalies, l.reconDays, l.scrapeE} {
		ch <- d
	}
}

// Collect implements prometheus.Collector: the last reading if it is
// fresh, else a new one (one at a time).
func (l *ledgerCollector) Collect(ch chan<- prometheus.Metric) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.last == nil || time.Since(l.readAt) >= ledgerGaugeTTL {
		read := make(chan prometheus.Metric, 64)
		go func() { l.read(read); close(read) }()
		l.last = l.last[:0]
		for m := range read {
			l.last = append(l.last, m)
		}
		l.readAt = time.Now()
	}
	for _, m := range l.last {
		ch <- m
	}
}

// read queries the gauges.
func (l *ledgerCollector) read(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	failed := 0.0
	kinds := labelSets(ledger.AnomalyKinds)
	queries := []struct {
		sql   string
		desc  *prometheus.Desc
		known [][]string // label sets shown at 0 when the query has no row for them
	}{
		// Open states only: finished refunds are nearly all of a table
		// never pruned; the (state, next_check_at) index serves these.
		{"SELECT state, COUNT(*) FROM refunds WHERE state IN ('CREATED', 'PROCESSING', 'UNKNOWN', 'ABNORMAL') GROUP BY state",
			l.refunds, labelSets([]string{"CREATED", "PROCESSING", "UNKNOWN", "ABNORMAL"})},
		// Not DONE: done jobs are nearly all of a table never pruned, and
		// the (state, next_run_at) index serves the other states.
		{"SELECT kind, state, COUNT(*) FROM outbox_jobs WHERE state IN ('PENDING', 'RUNNING', 'DEAD') GROUP BY kind, state",
			l.outboxJobs, labelSets(ledger.JobKinds, []string{ledger.JobPending, ledger.JobRunning, ledger.JobDead})},
		// Few rows (each needs a person), on the (kind, ref) key.
		{"SELECT kind, COUNT(*) FROM anomalies GROUP BY kind", l.anomalies, kinds},
		{"SELECT kind, SUM(CASE WHEN state = 'OPEN' THEN 1 ELSE 0 END) FROM anomalies GROUP BY kind", l.openAnomalies, kinds},
		// One row per day: an UNREADABLE day stays counted after it leaves
		// the daily job's window, until a person's rerun reads its bill.
		{"SELECT status, COUNT(*) FROM reconciliations GROUP BY status", l.reconDays, labelSets([]string{
			ledger.ReconcileMatched, ledger.ReconcileMismatched, ledger.ReconcileNoBill, ledger.ReconcileUnreadable,
			ledger.ReconcilePending})},
	}
	for _, q := range queries {
		if err := l.collectCounts(ctx, ch, q.sql, q.desc, q.known); err != nil {
			slog.WarnContext(ctx, "metrics: read ledger gauge", "err", err)
			failed = 1
		}
	}
	if err := l.collectOldest(ctx, ch); err != nil {
		slog.WarnContext(ctx, "metrics: read refund or outbox age", "err", err)
		failed = 1
	}
	ch <- prometheus.MustNewConstMetric(l.scrapeE, prometheus.GaugeValue, failed)
}

// collectCounts emits one gauge per row (label columns, then a count)
// and 0 for each known label set without a row: a series that vanishes
// at 0 and comes back at 1 shows no increase to increase() or delta(), so
// an alert on one would miss the first duplicate payment, or a dead
// letter after the last was replayed. Nothing is made up when the query
// fails.
func (l *ledgerCollector) collectCounts(ctx context.Context, ch chan<- prometheus.Metric, q string,
	desc *prometheus.Desc, known [][]string) error {
	rows, err := l.db.QueryContext(ctx, q)
	if err != nil {
		return err
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return err
	}
	seen := map[string]bool{}
	for rows.Next() {
		labels := make([]string, len(cols)-1)
		var n int64
		dest := make([]any, len(cols))
		for i := range labels {
			dest[i] = &labels[i]
		}
		dest[len(cols)-1] = &n
		if err := rows.Scan(dest...); err != nil {
			return err
		}
		seen[strings.Join(labels, "\x00")] = true
		ch <- prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, float64(n), labels...)
	}
	if err := rows.Err(); err != nil {
		return err
	}
	for _, labels := range known {
		if !seen[strings.Join(labels, "\x00")] {
			ch <- prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, 0, labels...)
		}
	}
	return nil
}

// labelSets returns every combination of one value from each list.
func labelSets(lists ...[]string) [][]string {
	sets := [][]string{nil}
	for _, values := range lists {
		var next [][]string
		for _, set := range sets {
			for _, v := range values {
				next = append(next, append(slices.Clone(set), v))
			}
		}
		sets = next
	}
	return sets
}

// collectOldest reads the creation time of the oldest unfinished refund
// per state and job per kind; the age is computed here so the SQL stays
// portable.
func (l *ledgerCollector) collectOldest(ctx context.Context, ch chan<- prometheus.Metric) error {
	// A count that stays up says little with steady traffic; the age of the
	// oldest says one refund is stuck (the (state, next_check_at) index
	// leaves only open refunds to read).
	if err := l.collectAge(ctx, ch, l.refundOldest, `SELECT state, MIN(created_at) FROM refunds
		WHERE state IN ('CREATED', 'PROCESSING', 'UNKNOWN', 'ABNORMAL') GROUP BY state`); err != nil {
		return err
	}
	if err := l.collectAge(ctx, ch, l.outboxOldest,
		"SELECT kind, MIN(created_at) FROM outbox_jobs WHERE state IN ('PENDING', 'RUNNING') GROUP BY kind"); err != nil {
		return err
	}
	// Jobs a worker may take now and none has (as the claim sees them: a
	// release waits for its order's confirmation; a RUNNING job past its
	// lease is a crashed worker's): how far the workers are behind, apart
	// from jobs waiting out a backoff or replayed long after they were made.
	return l.collectAge(ctx, ch, l.outboxDueLag, `SELECT kind, MIN(next_run_at) FROM outbox_jobs
		WHERE state IN ('PENDING', 'RUNNING') AND next_run_at <= ? AND (kind <> ? OR NOT EXISTS (SELECT 1 FROM outbox_jobs c
		WHERE c.out_trade_no = outbox_jobs.out_trade_no AND c.kind = ? AND c.state <> ?)) GROUP BY kind`,
		l.now(), ledger.JobReleaseInventory, ledger.JobConfirmInventory, ledger.JobDone)
}

// collectAge emits, per label (a kind or state), how long ago the time
// the query reads was.
func (l *ledgerCollector) collectAge(ctx context.Context, ch chan<- prometheus.Metric, desc *prometheus.Desc, q string, args ...any) error {
	rows, err := l.db.QueryContext(ctx, q, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var label string
		var at sqlTime
		if err := rows.Scan(&label, &at); err != nil {
			return err
		}
		ch <- prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, max(l.now().Sub(at.Time).Seconds(), 0), label)
	}
	return rows.Err()
}

// sqlTime scans a DATETIME from MySQL (time.Time with parseTime) or
// SQLite (text) alike.
type sqlTime struct{ time.Time }

// Scan implements sql.Scanner.
func (t *sqlTime) Scan(v any) error {
	switch x := v.(type) {
	case time.Time:
		t.Time = x
	case string:
		return t.parse(x)
	case []byte:
		return t.parse(string(x))
	}
	return nil
}

func (t *sqlTime) parse(s string) error {
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02 15:04:05.999999999-07:00", "2006-01-02 15:04:05.999999"} {
		if p, err := time.Parse(layout, s); err == nil {
			t.Time = p
			return nil
		}
	}
	return fmt.Errorf("unrecognised time %q", s) // a scrape error, not an age of centuries
}

// RefundMoved counts one committed refund change by the state it reached.
func (m *Metrics) RefundMoved(state ledger.RefundState) {
	if m != nil {
		m.RefundMoves.WithLabelValues(string(state)).Inc()
	}
}

// CompensationCheck counts one lost-callback check by its result.
func (m *Metrics) CompensationCheck(result string) {
	if m != nil {
		m.Compensation.WithLabelValues(result).Inc()
	}
}

// OutboxAttempt counts one stored outbox attempt by its outcome.
func (m *Metrics) OutboxAttempt(outcome string) {
	if m != nil {
		m.OutboxAttempts.WithLabelValues(outcome).Inc()
	}
}
