package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"paygateway/gateway/wechatpay/wxpaysim"
)

// Level is what one concurrency level measured.
type Level struct {
	Concurrency int
	New         Result // first deliveries: verify, decrypt, record
	Dup         Result // redeliveries of the notifications answered 2xx in New
	Ceiling     Result // bare transactions doing the same writes, one per notification
	// Grouped is the same writes in the transactions the gateway's group
	// commit makes of them (see ceiling.grouped).
	Grouped Result
	// CeilingFirst says the ceilings ran before the gateway's phases, not
	// after them. Levels alternate, so that neither always inherits the
	// other's flush and checkpoint debt on the shared database server.
	CeilingFirst bool
}

// CeilingRate is the most a bare database did the writes at this level:
// the higher of one commit per notification and the gateway's grouping.
// The gateway can reach either (its batches are of one when the clients
// are few), so the lower one is no ceiling.
func (l Level) CeilingRate() float64 { return max(l.Ceiling.Rate(), l.Grouped.Rate()) }

// Ratio is new-notification throughput over the ceiling (CeilingRate).
func (l Level) Ratio() float64 { return ratio(l.New.Rate(), l.CeilingRate()) }

// OneCommitRatio is new-notification throughput over the ceiling of one
// commit per notification alone: the "bare transaction", which
// the sessions before the grouped ceiling reported.
func (l Level) OneCommitRatio() float64 { return ratio(l.New.Rate(), l.Ceiling.Rate()) }

func ratio(rate, ceiling float64) float64 {
	if ceiling > 0 {
		return rate / ceiling
	}
	return 0
}

// oneCommitBest is the best one-commit ceiling of levels.
func oneCommitBest(levels []Level) float64 {
	best := 0.0
	for _, l := range levels {
		best = max(best, l.Ceiling.Rate())
	}
	return best
}

// BackendReport is one backend's run.
type BackendReport struct {
	Name      string
	DBVersion string
	Levels    []Level
	Opens     []OpenRun // open loops: at the ceiling (or -rate if lower), and at -rate if higher
	Refunds   string    // refund stage outcome, human readable
	RefundsAt string    // refunds offered at WeChat Pay's per-merchant rate, human readable
	// RefundRun and RefundAtRun are those two stages' figures (with their
	// failures); nil when a stage did not run or could not start.
	RefundRun, RefundAtRun *Result
	// Checks compare the gateway's database with its answers after each
	// stage; one that failed makes the run invalid.
	Checks []Check
}

// Invalid lists the problems the ledger checks found: a run with any is
// invalid, whatever its figures.
func (r BackendReport) Invalid() []string {
	var out []string
	for _, c := range r.Checks {
		for _, p := range c.Problems {
			out = append(out, c.Name+": "+p)
		}
	}
	return out
}

func benchBackend(ctx context.Context, e *env, o Options, name string) (BackendReport, error) {
	t, err := openTarget(ctx, e, o, name)
	if err != nil {
		return BackendReport{}, err
	}
	defer t.close()
	rep := BackendReport{Name: name, DBVersion: t.version}
	p := newPoster(t.gw.URL())
	raw, err := newRawPoster(t.gw.URL(), notifyPath)
	if err != nil {
		return rep, err
	}
	defer raw.close()
	m := newMeter(t.gw.PID(), name == "mysql" && isLocal(o.MySQL) && isLocal(o.Redis))
	for i, c := range o.Levels {
		if ctx.Err() != nil {
			return rep, ctx.Err()
		}
		l, check, err := benchLevel(ctx, e, t, raw, m, o.N, c, i%2 == 1)
		if err == nil {
			err = ctx.Err() // interrupted: the check may not have run
		}
		if err != nil {
			return rep, err
		}
		rep.Levels = append(rep.Levels, l)
		rep.addCheck(&check)
	}
	for i, rate := range openRates(o.Rate, rep.Levels) {
		run, check, err := openRun(ctx, e, t, raw, m, rate, fmt.Sprintf("O%s%d-", tagOf(t), i))
		if err == nil {
			err = ctx.Err()
		}
		if err != nil {
			return rep, err
		}
		rep.Opens = append(rep.Opens, run)
		rep.addCheck(&check)
	}
	var check *Check
	rep.Refunds, rep.RefundRun, check = refundStage(ctx, e, t, p, m, o.Refunds, maxLevel(o.Levels))
	rep.addCheck(check)
	rep.RefundsAt, rep.RefundAtRun, check = refundRateStage(ctx, e, t, p, m, o.Refunds)
	rep.addCheck(check)
	return rep, nil
}

// openRates are the rates of the open loops: first the lower of rate
// and the best ceiling (the p99 target's), then rate if above it, then
// the best one-commit ceiling's if below the first: the rate earlier
// sessions judged the p99 at, for comparison (see p99Verdict).
func openRates(rate float64, levels []Level) []float64 {
	best := 0.0
	for _, l := range levels {
		best = max(best, l.CeilingRate())
	}
	rates := []float64{min(rate, best)}
	if rate > best {
		rates = append(rates, rate)
	}
	if one := oneCommitBest(levels); one > 0 && one < rates[0]-0.5 {
		rates = append(rates, one)
	}
	return rates
}

// addCheck records a ledger check (nil: the stage did not run) and says
// at once, on stderr, if it failed: the run goes on, for its figures, but
// it is invalid.
func (r *BackendReport) addCheck(c *Check) {
	if c == nil {
		return
	}
	r.Checks = append(r.Checks, *c)
	if len(c.Problems) > 0 {
		fmt.Fprintf(os.Stderr, "gwbench: %s: ledger check FAILED, the run is invalid: %s\n", r.Name, c)
	}
}

// OpenRun is an open loop at a fixed offered rate.
type OpenRun struct {
	Offered float64 // callbacks/s
	// RedoAge is InnoDB's checkpoint age when the loop began (MySQL only,
	// -1 unknown): how much of the redo log earlier phases left unflushed,
	// which decides how soon InnoDB must flush before it can write.
	RedoAge int64
	Result
}

// openRun offers rate callbacks/s for about 3 s (new notifications),
// then checks the ledger.
func openRun(ctx context.Context, e *env, t *target, raw *rawPoster, m *meter, rate float64, prefix string) (OpenRun, Check, error) {
	count := min(max(int(rate*3), 500), 15000)
	notes, err := signAll(ctx, count, newNotification(e, prefix))
	if err != nil {
		return OpenRun{}, Check{}, err
	}
	reqs := raw.encodeAll(notes)
	ok := make([]bool, count)
	// Fresh connections: the gateway may have closed those an earlier
	// loop left idle (near its cap it closes connections idle 250 ms).
	raw.close()
	age := redoAge(ctx, t)
	r := m.measure(func() Result { return openLoop(count, rate, 4096, sendOp(raw, reqs, ok)) })
	name := fmt.Sprintf("open loop at %.0f/s", rate)
	check, _ := t.ledger.checkNew(ctx, name, prefix, orderNos(prefix, count), ok)
	return OpenRun{Offered: rate, RedoAge: age, Result: r}, check, nil
}

// redoAge reads InnoDB's checkpoint age in bytes on t's server, or -1
// (SQLite, or a server that does not report it).
func redoAge(ctx context.Context, t *target) int64 {
	if t.name != "mysql" {
		return -1
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var name string
	var age int64
	err := t.ceiling.QueryRowContext(ctx, "SHOW GLOBAL STATUS LIKE 'Innodb_checkpoint_age'").Scan(&name, &age)
	if err != nil {
		return -1
	}
	return age
}

// dupFactor is how many redeliveries each recorded notification gets in
// the duplicate phase (duplicates are fast, so the phase needs more).
const dupFactor = 3

// benchLevel runs, at concurrency c, the gateway's new and duplicate
// phases and the two ceilings (one commit per notification, then grouped
// as the gateway groups them, each on orders of its own), the ceilings
// first if ceilingFirst, and checks the gateway's ledger after each of its
// phases.
func benchLevel(ctx context.Context, e *env, t *target, raw *rawPoster, m *meter, n, c int, ceilingFirst bool) (Level, Check, error) {
	l := Level{Concurrency: c, CeilingFirst: ceilingFirst}
	prefix := fmt.Sprintf("B%s%03d-", tagOf(t), c)
	notes, err := signAll(ctx, n, newNotification(e, prefix))
	if err != nil {
		return l, Check{}, err
	}
	ceil := &ceiling{db: t.ceiling, prefix: prefix}
	grouped := &ceiling{db: t.ceiling, prefix: "G" + prefix}
	runCeiling := func() {
		l.Ceiling = m.measure(func() Result { return closedLoop(n, c, ceil.op) })
		l.Grouped = m.measure(func() Result { return grouped.grouped(n, c, t.policy) })
	}
	if ceilingFirst {
		runCeiling()
	}
	check, err := gatewayPhases(ctx, e, t, raw, m, &l, prefix, notes)
	if err == nil && !ceilingFirst {
		runCeiling()
	}
	return l, check, err
}

// gatewayPhases delivers notes (new), then redelivers those answered 2xx
// (dup), checking the ledger after each phase.
func gatewayPhases(ctx context.Context, e *env, t *target, raw *rawPoster, m *meter, l *Level, prefix string,
	notes []wxpaysim.Notification) (Check, error) {
	n, c := len(notes), l.Concurrency
	reqs, ok, orders := raw.encodeAll(notes), make([]bool, len(notes)), orderNos(prefix, len(notes))
	before, berr := scrapeBatches(t.gw.URL(), e.id.APIKeys["ops"])
	l.New = m.measure(func() Result { return closedLoop(n, c, sendOp(raw, reqs, ok)) })
	if after, err := scrapeBatches(t.gw.URL(), e.id.APIKeys["ops"]); berr == nil && err == nil {
		l.New.Txns = int(after.txns - before.txns) // the grouped ceiling's figure, for comparison
	}
	check, rows := t.ledger.checkNew(ctx, fmt.Sprintf("%d clients", c), prefix, orders, ok)
	dups, err := redeliveries(ctx, e, notes, ok)
	if err != nil {
		return check, err
	}
	reqs = raw.encodeAll(dups)
	l.Dup = m.measure(func() Result { return closedLoop(len(reqs), c, sendOp(raw, reqs, nil)) })
	t.ledger.checkDups(ctx, &check, prefix, orders, ok, rows, len(reqs))
	return check, nil
}

// redeliveries signs dupFactor fresh redeliveries of each note answered
// 2xx (ok): one that failed was never recorded, and sending it again
// would be a first delivery.
func redeliveries(ctx context.Context, e *env, notes []wxpaysim.Notification, ok []bool) ([]wxpaysim.Notification, error) {
	var answered []wxpaysim.Notification
	for i, n := range notes {
		if ok[i] {
			answered = append(answered, n)
		}
	}
	k := len(answered)
	return signAll(ctx, k*dupFactor, func(i int) (wxpaysim.Notification, error) {
		return answered[i%k].Resign(e.id.Keys, wxpaysim.PublicKeyMode(), time.Now())
	})
}

// sendOp sends reqs[i]; ok, unless nil, records which were answered 2xx.
func sendOp(raw *rawPoster, reqs [][]byte, ok []bool) func(i int) error {
	return func(i int) error {
		err := raw.send(reqs[i])
		if ok != nil {
			ok[i] = err == nil
		}
		return err
	}
}

// orderNo is the out_trade_no of the i-th notification under prefix.
func orderNo(prefix string, i int) string { return fmt.Sprintf("%s%07d", prefix, i) }

func orderNos(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = orderNo(prefix, i)
	}
	return out
}

// newNotification signs a fresh payment of order prefix+i.
func newNotification(e *env, prefix string) func(i int) (wxpaysim.Notification, error) {
	k := e.id.Keys
	return func(i int) (wxpaysim.Notification, error) {
		no := orderNo(prefix, i)
		now := time.Now()
		tx := wxpaysim.Transaction{AppID: k.AppID, MchID: k.MchID, OutTradeNo: no, TransactionID: "42" + no,
			TradeType: "JSAPI", TradeState: "SUCCESS", TradeStateDesc: "支付成功", BankType: "OTHERS",
			SuccessTime: now.Format(time.RFC3339), Payer: &wxpaysim.Payer{OpenID: "o-" + no},
			Amount: wxpaysim.TransactionAmount{Total: 100, PayerTotal: 100, Currency: "CNY", PayerCurrency: "CNY"}}
		return k.PaymentNotification(tx, wxpaysim.PublicKeyMode(), now)
	}
}

const notifyPath = "/v1/wechatpay/notify/payment"

func tagOf(t *target) string { return t.name[:1] }

func maxLevel(levels []int) int {
	m := 1
	for _, c := range levels {
		m = max(m, c)
	}
	return m
}
