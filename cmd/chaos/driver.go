package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"paygateway/gateway/wechatpay/wxpaysim"
)

// order is one paid order and its notification (created on first send).
type order struct {
	no     string
	amount int64
	once   sync.Once
	note   wxpaysim.Notification
	err    error
}

// openid is the payer's: only this user may refund the order.
func (o *order) openid() string { return "oU" + o.no }

// delivery is one POST WeChat (or a forger) makes.
type delivery struct {
	order  *order
	forged bool
}

// driver sends the deliveries the way WeChat does: a non-2xx answer or a
// connection error means "send again later", each time freshly signed.
type driver struct {
	w        *world
	o        Options
	url      string
	client   *http.Client
	forger   *wxpaysim.Keys
	progress atomic.Int64

	mu             sync.Mutex
	accepted       map[string]string // notify id → out_trade_no, answered 2xx
	acceptedOrders []*order
	gaveUp         []string // genuine notifications never accepted
	uncommitted    []string // answered 2xx, yet not in the ledger right after
	deferred       []deferredCheck
	forgedOrders   []string
	forgedAccepted int
	forgedRefused  int // forged deliveries answered 401 ESIGNATURE
	// forgedWrongReason lists forged deliveries that got no 401 ESIGNATURE:
	// refused for another reason, never answered, never built or never sent.
	forgedWrongReason []string
	attempts          int
	lat               *latencies // a soak's: each genuine POST's time (nil: not measured)
	refusals          map[string]int
}

func newDriver(w *world, o Options) (*driver, error) {
	// The forger knows the APIv3 key and the public key id (the worst case)
	// but not WeChat's private key.
	other, err := wxpaysim.GenerateKeys(w.id.Keys.MchID, w.id.Keys.AppID)
	if err != nil {
		return nil, err
	}
	f := *w.id.Keys
	f.PlatformKey = other.PlatformKey
	tr := &http.Transport{MaxIdleConnsPerHost: 256, IdleConnTimeout: 30 * time.Second}
	return &driver{w: w, o: o, url: w.gw.URL() + "/v1/wechatpay/notify/payment",
		client: &http.Client{Transport: tr, Timeout: 10 * time.Second}, forger: &f,
		accepted: map[string]string{}}, nil
}

// plan makes the shuffled deliveries: first deliveries, duplicates of
// random orders and forged ones, in random order.
func (d *driver) plan(run string) []delivery {
	n := d.o.Notifications
	forged := int(float64(n) * d.o.ForgedRate)
	dups := int(float64(n) * d.o.DuplicateRate)
	orders := make([]*order, n-forged-dups)
	var out []delivery
	for i := range orders {
		orders[i] = &order{no: fmt.Sprintf("C%s%07d", run, i), amount: 100 + rand.Int64N(9900)}
		out = append(out, delivery{order: orders[i]})
	}
	for range dups {
		out = append(out, delivery{order: orders[rand.IntN(len(orders))]})
	}
	for i := range forged {
		fo := &order{no: fmt.Sprintf("F%s%07d", run, i), amount: 100 + rand.Int64N(9900)}
		d.forgedOrders = append(d.forgedOrders, fo.no)
		out = append(out, delivery{order: fo, forged: true})
	}
	rand.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

// run delivers everything on o.Concurrency workers.
func (d *driver) run(ctx context.Context, plan []delivery) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range d.o.Concurrency {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= len(plan) {
					return
				}
				if plan[i].forged {
					d.forge(ctx, plan[i].order)
				} else {
					d.deliver(ctx, plan[i].order)
				}
				d.progress.Add(1)
			}
		})
	}
	wg.Wait()
	// A cancelled run leaves deliveries never taken: their forgeries were
	// never refused, so they do not count as proof either.
	for _, p := range plan[min(int(next.Load()), len(plan)):] {
		if p.forged {
			d.forgeryUnproven(p.order.no + " never sent")
		}
	}
}

// signed returns a freshly signed delivery of o's notification. The first
// call pays the order in the simulator and builds the notification.
func (d *driver) signed(ctx context.Context, o *order) (wxpaysim.Notification, error) {
	fresh := false
	o.once.Do(func() {
		fresh = true
		tx, err := d.w.sim.Pay(ctx, o.no, o.amount, o.openid(), true)
		if err != nil {
			o.err = err
			return
		}
		o.note, o.err = d.w.id.Keys.PaymentNotification(tx, wxpaysim.PublicKeyMode(), time.Now())
	})
	if o.err != nil || fresh {
		return o.note, o.err
	}
	return o.note.Resign(d.w.id.Keys, wxpaysim.PublicKeyMode(), time.Now())
}

// deliver sends o's notification until it is answered 2xx or the delivery
// timeout passes.
func (d *driver) deliver(ctx context.Context, o *order) {
	deadline := time.Now().Add(d.o.DeliveryTimeout)
	backoff := 50 * time.Millisecond
	for ctx.Err() == nil && time.Now().Before(deadline) {
		n, err := d.signed(ctx, o)
		status, reason := 0, "not built"
		if err == nil {
			sent := time.Now()
			status, reason, err = d.postReason(ctx, n)
			d.lat.add(time.Since(sent))
			if err == nil && status/100 == 2 {
				d.accept(o, n.ID)
				d.checkCommitted(ctx, o, n.ID)
				return
			}
		}
		d.refused(status, reason, err)
		sleep(ctx, backoff)
		backoff = min(backoff*2, time.Second)
	}
	d.mu.Lock()
	d.gaveUp = append(d.gaveUp, o.no)
	d.mu.Unlock()
}

// refused counts a genuine delivery's answer other than 2xx, or its
// error, by kind: under faults they are expected, in a soak each is news.
func (d *driver) refused(status int, reason string, err error) {
	what := fmt.Sprintf("%d %s", status, reason)
	if err != nil && status == 0 {
		what = "error " + reason
		if reason == "" {
			what = "no answer"
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.refusals == nil {
		d.refusals = map[string]int{}
	}
	d.refusals[what]++
}

// forgeTries × 200 ms (a minute) outlasts a gateway kill and restart, a
// database crash and the Redis outage: a forgery not refused by then was
// not refused at all.
const forgeTries = 300

// forge sends a notification signed with the wrong key until the gateway
// answers. Only a 401 ESIGNATURE proves the signature check; every other
// end (accepted, refused for another reason, never answered) is recorded,
// so a run whose forgeries all failed to get through the check proves
// nothing rather than passing.
func (d *driver) forge(ctx context.Context, o *order) {
	tx := forgedTransaction(d.forger, o)
	last := "never sent"
	for attempt := 0; attempt < forgeTries && ctx.Err() == nil; attempt++ {
		n, err := d.forger.PaymentNotification(tx, wxpaysim.PublicKeyMode(), time.Now())
		if err != nil {
			d.forgeryUnproven(o.no + " not built: " + err.Error())
			return
		}
		status, reason, err := d.postReason(ctx, n)
		switch {
		case err != nil:
			last = err.Error()
		case status/100 == 2:
			d.mu.Lock()
			d.forgedAccepted++
			d.mu.Unlock()
			return
		case status == http.StatusUnauthorized && reason == "ESIGNATURE":
			d.mu.Lock()
			d.forgedRefused++
			d.mu.Unlock()
			return
		case status/100 == 4: // refused, but not by the signature check it is there to prove
			d.forgeryUnproven(fmt.Sprintf("%s refused with %d %q", o.no, status, reason))
			return
		default:
			last = fmt.Sprintf("%d %q", status, reason)
		}
		sleep(ctx, 200*time.Millisecond)
	}
	d.forgeryUnproven(o.no + " never refused, last answer: " + last)
}

// forgedTransaction is a payment of o as WeChat Pay would report it.
func forgedTransaction(k *wxpaysim.Keys, o *order) wxpaysim.Transaction {
	return wxpaysim.Transaction{AppID: k.AppID, MchID: k.MchID, OutTradeNo: o.no, TransactionID: "4200F" + o.no,
		TradeType: "JSAPI", TradeState: "SUCCESS", TradeStateDesc: "支付成功", SuccessTime: time.Now().Format(time.RFC3339),
		Payer: &wxpaysim.Payer{OpenID: "o-forged"}, Amount: wxpaysim.TransactionAmount{Total: o.amount,
			PayerTotal: o.amount, Currency: "CNY", PayerCurrency: "CNY"}}
}

// forgeryUnproven records a forged delivery that got no 401 ESIGNATURE.
func (d *driver) forgeryUnproven(what string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.forgedWrongReason = append(d.forgedWrongReason, what)
}

// postReason delivers n and returns the status and the gateway's reason
// code of a refusal ({"code":"FAIL","reason":…}).
func (d *driver) postReason(ctx context.Context, n wxpaysim.Notification) (int, string, error) {
	d.mu.Lock()
	d.attempts++
	d.mu.Unlock()
	resp, err := n.Post(ctx, d.client, d.url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if err != nil {
		return 0, "", err
	}
	var fail struct {
		Reason string `json:"reason"`
	}
	_ = json.Unmarshal(b, &fail) // a 204 has no body
	return resp.StatusCode, fail.Reason, nil
}

func (d *driver) accept(o *order, id string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.accepted[id]; !ok {
		d.accepted[id] = o.no
		d.acceptedOrders = append(d.acceptedOrders, o)
	}
}

// checkCommitted asks the ledger, right after a 2xx, whether the
// notification (or, when a query recorded the payment first, the paid
// order) is there: the gateway answers only after its commit, so it must
// be. A later redelivery of the same id cannot hide a loss from this
// check as it can from the end-of-run one, nor can a concurrent one that
// commits just after: only rows dated by the 2xx count (committedBy).
// While MariaDB is down the check is deferred (see recheckDeferred).
func (d *driver) checkCommitted(ctx context.Context, o *order, id string) {
	at := time.Now()
	qctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	ok, err := d.committedBy(qctx, o.no, id, at)
	if err == nil && ok {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err != nil {
		d.deferred = append(d.deferred, deferredCheck{no: o.no, id: id, at: at})
		return
	}
	d.uncommitted = append(d.uncommitted, o.no)
}

// deferredCheck is a check after a 2xx that could not reach the ledger.
type deferredCheck struct {
	no, id string
	at     time.Time // when the 2xx came
}

// recheckDeferred runs, once the database is back, the checks that could
// not run (committedBy). It returns how many ran.
func (d *driver) recheckDeferred(ctx context.Context) (int, error) {
	d.mu.Lock()
	checks := d.deferred
	d.mu.Unlock()
	for _, c := range checks {
		ok, err := d.committedBy(ctx, c.no, c.id, c.at)
		if err != nil {
			return 0, fmt.Errorf("deferred commit check of %s: %w", c.no, err)
		}
		if !ok {
			d.mu.Lock()
			d.uncommitted = append(d.uncommitted, c.no+" (checked after the outage)")
			d.mu.Unlock()
		}
	}
	return len(checks), nil
}

// commitSlack is how much later than the 2xx a row's date may be and
// still count as written before it. The database's clock is this host's,
// and the gateway dates rows by its estimate of it, off by at most half a
// round trip to the database. A concurrent duplicate that commits within
// the slack after a 2xx sent before any commit hides that loss: keep it
// small.
const commitSlack = 200 * time.Millisecond

// committedBy reports whether notification id (or order no's move to
// SUCCESS) was written before its 2xx came at at. A row written only by
// a later redelivery, after a loss, is dated after it.
func (d *driver) committedBy(ctx context.Context, no, id string, at time.Time) (bool, error) {
	by := at.Add(commitSlack).UTC()
	var n int
	err := d.w.sql.QueryRowContext(ctx, `SELECT (SELECT COUNT(*) FROM notifications WHERE notify_id = ? AND received_at <= ?)
		+ (SELECT COUNT(*) FROM state_history WHERE entity = 'payment' AND entity_key = ? AND to_state = 'SUCCESS'
		AND created_at <= ?)`, id, by, no, by).Scan(&n)
	return n > 0, err
}

// paidSoFar returns up to n orders already accepted by the gateway.
func (d *driver) paidSoFar(n int) []*order {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]*order(nil), d.acceptedOrders[:min(n, len(d.acceptedOrders))]...)
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
