package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"paygateway/cmd/internal/stack"
	"paygateway/gateway/inventory/inventorysim"
	"paygateway/gateway/wechatpay/wxpaysim"
)

// world is everything a chaos run starts: private MariaDB and Redis, the
// gateway binary, and the two simulators in this process.
type world struct {
	dir   string
	db    *stack.MariaDB
	redis *stack.Redis
	gw    *stack.Gateway
	// notifyAddr is the gateway's notification port (http.notify_addr),
	// where WeChat Pay's refund notifications go; the payment
	// notifications go to its main port, which serves them too.
	notifyAddr string
	id         *stack.Identity
	sim        *wxpaysim.Sim
	inv        *inventorysim.Sim
	acks       *ackWatch // the ledger right after each refund notification's 2xx
	sql        *sql.DB
	closers    []func()
}

func startWorld(ctx context.Context, o Options) (*world, error) {
	w := &world{dir: o.Dir}
	if w.dir == "" {
		d, err := os.MkdirTemp("", "chaos")
		if err != nil {
			return nil, err
		}
		w.dir = d
		w.closers = append(w.closers, func() { stack.RemoveAll(d) })
	}
	if err := w.start(ctx, o); err != nil {
		w.close()
		return nil, err
	}
	return w, nil
}

func (w *world) start(ctx context.Context, o Options) error {
	var err error
	for _, d := range []string{"mariadb", "redis", "keys"} {
		if err := os.MkdirAll(filepath.Join(w.dir, d), 0o700); err != nil {
			return err
		}
	}
	bin, err := stack.BuildGateway(ctx, w.dir)
	if err != nil {
		return err
	}
	if w.db, err = stack.StartMariaDB(ctx, filepath.Join(w.dir, "mariadb")); err != nil {
		return fmt.Errorf("private mariadb: %w", err)
	}
	w.closers = append(w.closers, w.db.Stop)
	if _, err := stack.CreateDatabase(ctx, w.db.DSN(""), "chaos"); err != nil {
		return err
	}
	if w.sql, err = sql.Open("mysql", w.db.DSN("chaos")+"?parseTime=true"); err != nil {
		return err
	}
	w.closers = append(w.closers, func() { w.sql.Close() })
	if w.redis, err = stack.StartRedis(ctx, filepath.Join(w.dir, "redis")); err != nil {
		return fmt.Errorf("private redis: %w", err)
	}
	w.closers = append(w.closers, w.redis.Stop)
	if w.id, err = stack.NewIdentity(filepath.Join(w.dir, "keys")); err != nil {
		return err
	}
	// The ports are fixed before the simulators start: WeChat's refund
	// notifications go to the gateway, which restarts on the same ports.
	port, err := stack.FreePort()
	if err != nil {
		return err
	}
	notifyPort, err := stack.FreePort()
	if err != nil {
		return err
	}
	w.gw = &stack.Gateway{Bin: bin, Dir: w.dir, Port: port}
	w.notifyAddr = "127.0.0.1:" + strconv.Itoa(notifyPort)
	simURL, err := w.serve(ctx, o)
	if err != nil {
		return err
	}
	w.gw.Env = append(w.id.Env("mysql://"+w.db.DSN("chaos"), w.redis.Addr(), simURL[0], simURL[1]),
		chaosEnv(w.notifyAddr)...)
	if o.Soak > 0 {
		w.gw.Env = append(w.gw.Env, "GATEWAY_REDIS_POOL_SIZE="+strconv.Itoa(soakRedisPool))
	}
	w.closers = append(w.closers, w.gw.Stop)
	if err := w.gw.Start(ctx); err != nil {
		return fmt.Errorf("gateway (log %s): %w", filepath.Join(w.dir, "gateway.log"), err)
	}
	return nil
}

// serve starts the WeChat Pay and inventory simulators; it returns their URLs.
func (w *world) serve(ctx context.Context, o Options) ([2]string, error) {
	var urls [2]string
	w.acks = newAckWatch(w.sql)
	w.sim = wxpaysim.New(w.id.Keys, wxpaysim.Options{RefundNotifyURL: "http://" + w.notifyAddr + refundNotifyPath,
		NotifyRetryDelays: refundNotifyRetries, RefundGap: refundGap, OnRefundAck: w.acks.onAck})
	w.closers = append(w.closers, w.sim.Close)
	w.sim.SetFaults(refundFaults)
	if o.Soak > 0 {
		w.sim.SetFaults(soakRefundRules)
	}
	w.inv = inventorysim.New()
	f := inventorysim.Faults{ErrorRate: o.InventoryErrors, ApplyThenTimeoutRate: o.InventoryTimeout,
		ApplyThenTimeoutDelay: inventoryStall}
	if err := f.Validate(); err != nil {
		return urls, err
	}
	w.inv.SetFaults(f)
	for i, h := range []http.Handler{w.sim.Handler(), w.inv.Handler()} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return urls, err
		}
		srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				o.logf("simulator stopped: %v", err)
			}
		}()
		w.closers = append(w.closers, func() { _ = srv.Close() })
		urls[i] = "http://" + ln.Addr().String()
	}
	return urls, nil
}

const refundNotifyPath = "/v1/wechatpay/notify/refund"

// refundFaults: WeChat Pay's refund API (creates and queries) answers 5xx
// without applying, drops the connection without applying, or applies and
// then never answers, answers an application "order not found" for a
// paid order (as it has been seen to minutes after a payment), or applies
// it and answers an unsigned 403 (a proxy's), so refunds are made and
// settled through unknown outcomes, not only clean answers. The hold
// outlasts the gateway's WeChat Pay timeout (chaosEnv), so every hold is
// a real timeout. WeChat Pay's quota of 150 applications a second holds,
// answered 429 FREQUENCY_LIMITED (applied nothing) over it, and 2% of the
// requests meet it anyway (another system of the merchant's spent it).
// The first request is frequency-limited, the next dropped, the first three
// applications are answered "order not found", and the next four the
// proxy's 403, whatever the dice say, so even the short run has them all
// (four: the query right after each meets the query lag unless a fault
// of its own hits it first, and a short run once saw no lag at all).
// Queries lag the applications, as WeChat Pay's do: a refund younger than
// refundQueryLag is "not found", so the query the gateway makes right
// after a timeout or a 403 never finds the refund, and only the janitor's,
// a safety buffer later, may conclude. Refunds do not all succeed either:
// WeChat Pay closes 10% as they settle (the money goes back to the order,
// so a third refund of the storm may fit) and holds 5% of the rest
// ABNORMAL, which a person resolves to SUCCESS abnormalResolve later; the
// first two refunds to settle are closed and the next two held.
var refundFaults = wxpaysim.Faults{PathPrefix: "/v3/refund/", PostsPerSecond: 150, FrequencyLimitedNext: 1,
	FrequencyLimitedRate: 0.02, Fail5xxRate: 0.1, DropRate: 0.05,
	ApplyThenTimeoutRate: 0.15, DropNext: 1, OrderUnknownNext: 3, OrderUnknownRate: 0.05, ApplyThenForbiddenNext: 4,
	ApplyThenForbiddenRate: 0.03, HoldFor: 1500 * time.Millisecond, RefundQueryLag: refundQueryLag,
	RefundClosedNext: 2, RefundClosedRate: 0.1, RefundAbnormalNext: 2, RefundAbnormalRate: 0.05,
	AbnormalResolveAfter: abnormalResolve}

// soakRefundRules keep WeChat Pay's own rules (its quota, its query lag)
// and inject nothing: a soak looks for growth under ordinary traffic, and
// a fault's recovery would blur it.
var soakRefundRules = wxpaysim.Faults{PathPrefix: "/v3/refund/", PostsPerSecond: 150, RefundQueryLag: refundQueryLag}

// refundQueryLag is how long a new refund stays hidden from queries. It
// outlasts the gateway's WeChat Pay timeout (1 s, chaosEnv), so the query
// right after a timed-out application meets it too, and stays under
// refunds.safety_buffer (4 s) by more than that timeout: the janitor's
// wait may start (the refund written, a resend counted) up to one call
// before WeChat Pay applies the refund.
const refundQueryLag = 2 * time.Second

// refundGap is WeChat Pay's least time between two refund applications
// of one order (a minute, shortened like the other clocks): the storm's
// second refund of each order meets it. The gateway's refunds.order_gap
// (chaosEnv) keeps a second more, its WeChat Pay timeout: how long the
// last application may have taken to arrive;
// an application the simulator refuses as too soon shows in the report's
// WeChat Pay refusals as order_gap.
const refundGap = 2 * time.Second

// abnormalResolve is how long a refund stays ABNORMAL: long enough for
// the gateway to see it held (by its notification, or the janitor's query
// every recheck, see chaosEnv), short enough to end within the run.
const abnormalResolve = 5 * time.Second

// refundNotifyRetries outlast a gateway restart, as WeChat's do.
var refundNotifyRetries = []time.Duration{200 * time.Millisecond, time.Second, 3 * time.Second, 10 * time.Second}

// Outbox timing for the run. The inventory simulator fails half its calls
// and applies-then-stalls a fifth of them; with the production defaults
// (5 s call timeout, 1 s → 5 min backoff) thousands of jobs would still be
// waiting out their backoff long after the run. The fault rates stay as
// demanded; only the clocks are shortened: a stall lasts just longer than
// the client's timeout, so every stall is a real timeout.
const (
	inventoryTimeout = 300 * time.Millisecond
	inventoryStall   = 600 * time.Millisecond
)

// chaosEnv is the gateway configuration the run adds to the stack's:
// chaos-sized outbox, compensation and refund clocks, refunds notified to
// the gateway's notification port at notifyAddr.
func chaosEnv(notifyAddr string) []string {
	return []string{
		"GATEWAY_HTTP_NOTIFY_ADDR=" + notifyAddr,
		"GATEWAY_WECHATPAY_REFUND_NOTIFY_URL=http://" + notifyAddr + refundNotifyPath,
		"GATEWAY_OUTBOX_WORKERS=32",
		"GATEWAY_DATABASE_MAX_OPEN_CONNS=80", // room for 32 workers beside the other caps (checked at start)
		"GATEWAY_OUTBOX_BATCH=20",
		"GATEWAY_OUTBOX_POLL_INTERVAL=50ms",
		"GATEWAY_OUTBOX_INITIAL_INTERVAL=50ms",
		"GATEWAY_OUTBOX_MAX_INTERVAL=1s",
		"GATEWAY_OUTBOX_LEASE=3s",
		"GATEWAY_INVENTORY_TIMEOUT=" + inventoryTimeout.String(),
		"GATEWAY_COMPENSATION_INTERVAL=5s",
		"GATEWAY_COMPENSATION_SAFETY_BUFFER=30s",
		// A refund request killed with the gateway is taken over after
		// IN_FLIGHT; the janitor settles refunds whose notification was lost.
		"GATEWAY_WECHATPAY_TIMEOUT=1s", // a create and a query fit the call timeout
		"GATEWAY_REFUNDS_CALL_TIMEOUT=3s",
		"GATEWAY_REFUNDS_IN_FLIGHT=15s", // > call_timeout + http.api_timeout (10s)
		"GATEWAY_REFUNDS_SAFETY_BUFFER=4s",
		"GATEWAY_REFUNDS_RECHECK=3s",
		"GATEWAY_REFUNDS_JANITOR_INTERVAL=1s",
		"GATEWAY_REFUNDS_ORDER_GAP=" + (refundGap + time.Second).String(),
	}
}

func (w *world) close() {
	for i := len(w.closers) - 1; i >= 0; i-- {
		w.closers[i]()
	}
	w.closers = nil
}
