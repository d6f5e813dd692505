package wxpaysim

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultNotifyRetryDelays is the redelivery schedule used when
// Options.NotifyRetryDelays is nil: WeChat's real schedule (15s, 15s, 30s, 3m…)
// compressed so tests finish quickly.
var DefaultNotifyRetryDelays = []time.Duration{200 * time.Millisecond, time.Second, 3 * time.Second}

// Options configures a Sim.
type Options struct {
	// NotifyURL receives TRANSACTION.SUCCESS notifications; "" sends none.
	NotifyURL string
	// RefundNotifyURL receives REFUND.* notifications when the refund request
	// carried no notify_url; "" sends none.
	RefundNotifyURL string
	// BaseURL prefixes bill download links; "" derives it from the request Host.
	BaseURL string
	// Now stamps business times (success_time, create_time, bill days) and
	// notification signatures. Default time.Now. Response signatures and the
	// merchant-signature skew check always use the wall clock, because
	// wechatpay-go checks them against time.Now.
	Now func() time.Time
	// Client delivers notifications; default has WeChat's 5 s answer limit.
	Client *http.Client
	// SignMode selects the key notifications and API answers are signed
	// with (default public-key mode), as during a switch between them.
	SignMode SignMode
	// RefundSettleDelay is how long a refund stays PROCESSING: 0 settles right
	// after creation (the create call still answers PROCESSING), <0 waits for
	// SettleRefunds or POST /sim/refunds/settle.
	RefundSettleDelay time.Duration
	// NotifyRetryDelays are the waits before each redelivery of a notification
	// that was not answered 200 or 204. nil means DefaultNotifyRetryDelays; an empty
	// non-nil slice delivers once.
	NotifyRetryDelays []time.Duration
	// RefundGap is how far apart WeChat Pay wants the refund applications of
	// one order ("同一笔订单多次退款的请求需相隔1分钟"): a new application
	// sooner after the order's last one (by Now) is answered 429
	// FREQUENCY_LIMITED and applies nothing. 0 turns the rule off, as most
	// tests refund one order back to back; WeChat Pay's is a minute.
	RefundGap time.Duration
	// OnRefundAck, when set, is called with each refund notification POST
	// the merchant acked (see NotifyAck), right after the answer came and
	// before it is recorded, outside the simulator's lock: a checker can
	// look then whether the merchant had stored it, rather than trust the
	// time its database says it stored it at.
	OnRefundAck func(outRefundNo string, ack NotifyAck)
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Sim is a simulated WeChat Pay platform. It is safe for concurrent use.
type Sim struct {
	keys   *Keys
	opts   Options
	log    *slog.Logger
	client *http.Client
	mux    *http.ServeMux
	seq    atomic.Int64

	mu         sync.Mutex
	orders     map[string]*OrderRecord // by out_trade_no
	orderList  []string                // out_trade_no in creation order
	payNotes   map[string]Notification // payment notification by out_trade_no
	refunds    map[string]*RefundRecord
	refundList []string       // out_refund_no in creation order
	refused    map[string]int // refund applications refused, by reason (see RefundsRefused)
	bills      map[string]billFile
	signMode   SignMode

	// refundMisses counts, by out_refund_no, the queries answered "not
	// found" (see RefundsResentBlind); mu guards it.
	refundMisses map[string]int

	fmu      sync.Mutex // taken inside mu (refundOutcome), never mu inside fmu
	faults   Faults
	injected map[string]int // faults injected so far, by kind
	// quotaSecond and quotaUsed count POSTs against Faults.PostsPerSecond.
	quotaSecond int64
	quotaUsed   int
	rng         *rand.Rand
	billFaults  BillFaults

	ctx    context.Context // ends on Close; bounds background work
	cancel context.CancelFunc
	bgMu   sync.Mutex // orders wg.Add against Close
	closed bool
	wg     sync.WaitGroup
}

// New returns a simulator for keys. Call Close to stop background work.
func New(keys *Keys, opts Options) *Sim {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Client == nil {
		opts.Client = &http.Client{Timeout: 5 * time.Second}
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.NotifyRetryDelays == nil {
		opts.NotifyRetryDelays = DefaultNotifyRetryDelays
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Sim{
		keys: keys, opts: opts, log: opts.Logger, client: opts.Client,
		orders: map[string]*OrderRecord{}, payNotes: map[string]Notification{},
		refunds: map[string]*RefundRecord{}, bills: map[string]billFile{},
		signMode: opts.SignMode, rng: rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())),
		ctx: ctx, cancel: cancel,
	}
	s.mux = s.routes()
	return s
}

// Handler serves the WeChat Pay API (/v3/…) and the control API (/sim/…).
func (s *Sim) Handler() http.Handler { return s.mux }

// Keys returns the simulator's keys.
func (s *Sim) Keys() *Keys { return s.keys }

// Close stops pending settlements and notification retries, releases
// connections held by apply-then-timeout faults and waits for them to end.
func (s *Sim) Close() {
	s.bgMu.Lock()
	s.closed = true
	s.bgMu.Unlock()
	s.cancel()
	s.wg.Wait()
}

// SetSignMode changes the key future notifications and answers are signed with, e.g. to
// simulate a certificate rotation or a switch to public-key mode.
func (s *Sim) SetSignMode(m SignMode) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.signMode = m
}

func (s *Sim) currentSignMode() SignMode {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.signMode
}

func (s *Sim) now() time.Time { return s.opts.Now().UTC() }

// background runs fn in a goroutine that Close waits for; after Close it
// does nothing.
func (s *Sim) background(fn func(ctx context.Context)) {
	s.bgMu.Lock()
	defer s.bgMu.Unlock()
	if s.closed {
		return
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		fn(s.ctx)
	}()
}

// sleep waits d or until ctx or the simulator ends; it reports whether the
// full wait elapsed.
func (s *Sim) sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	case <-s.ctx.Done():
		return false
	}
}

func (s *Sim) routes() *http.ServeMux {
	m := http.NewServeMux()
	m.HandleFunc("GET /v3/pay/transactions/out-trade-no/{out_trade_no}", s.api(s.handleQueryOrder))
	m.HandleFunc("POST /v3/pay/transactions/out-trade-no/{out_trade_no}/close", s.api(s.handleCloseOrder))
	m.HandleFunc("POST /v3/refund/domestic/refunds", s.api(s.handleCreateRefund))
	m.HandleFunc("GET /v3/refund/domestic/refunds/{out_refund_no}", s.api(s.handleQueryRefund))
	m.HandleFunc("GET /v3/bill/tradebill", s.api(s.handleTradeBill))
	m.HandleFunc("GET /v3/billdownload/file", s.api(s.handleBillDownload))
	m.HandleFunc("/v3/", s.api(s.handleUnknown))
	s.controlRoutes(m)
	return m
}
