package main

import (
	"context"
	"fmt"
	"time"

	"paygateway/gateway/wechatpay/wxpaysim"
)

// Level is what one concurrency level measured.
type Level struct {
	Concurrency int
	New         Result // first deliveries: verify, decrypt, record
	Dup         Result // redeliveries of recorded notifications
	Ceiling     Result // bare transactions doing the same writes
}

// Ratio is new-notification throughput over the ceiling.
func (l Level) Ratio() float64 {
	if c := l.Ceiling.Rate(); c > 0 {
		return l.New.Rate() / c
	}
	return 0
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
	best := 0.0
	for _, c := range o.Levels {
		if ctx.Err() != nil {
			return rep, ctx.Err()
		}
		l, err := benchLevel(ctx, e, t, raw, m, o.N, c)
		if err != nil {
			return rep, err
		}
		rep.Levels = append(rep.Levels, l)
		best = max(best, l.Ceiling.Rate())
	}
	rates := []float64{min(o.Rate, best)}
	if o.Rate > best {
		rates = append(rates, o.Rate)
	}
	for i, rate := range rates {
		run, err := openRun(ctx, e, t, raw, m, rate, fmt.Sprintf("O%s%d", tagOf(t), i))
		if err != nil {
			return rep, err
		}
		rep.Opens = append(rep.Opens, run)
	}
	rep.Refunds, rep.RefundRun = refundStage(ctx, e, t, p, m, o.Refunds, maxLevel(o.Levels))
	rep.RefundsAt, rep.RefundAtRun = refundRateStage(ctx, e, t, p, m, o.Refunds)
	return rep, nil
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

// openRun offers rate callbacks/s for about 3 s (new notifications).
func openRun(ctx context.Context, e *env, t *target, raw *rawPoster, m *meter, rate float64, prefix string) (OpenRun, error) {
	count := min(max(int(rate*3), 500), 15000)
	notes, err := signAll(ctx, count, newNotification(e, prefix))
	if err != nil {
		return OpenRun{}, err
	}
	reqs := raw.encodeAll(notes)
	age := redoAge(ctx, t)
	r := m.measure(func() Result {
		return openLoop(count, rate, 4096, func(i int) error { return raw.send(reqs[i]) })
	})
	return OpenRun{Offered: rate, RedoAge: age, Result: r}, nil
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

func benchLevel(ctx context.Context, e *env, t *target, raw *rawPoster, m *meter, n, c int) (Level, error) {
	l := Level{Concurrency: c}
	prefix := fmt.Sprintf("B%s%03d", tagOf(t), c)
	notes, err := signAll(ctx, n, newNotification(e, prefix))
	if err != nil {
		return l, err
	}
	reqs := raw.encodeAll(notes)
	l.New = m.measure(func() Result { return closedLoop(n, c, func(i int) error { return raw.send(reqs[i]) }) })
	dups, err := signAll(ctx, n*dupFactor, func(i int) (wxpaysim.Notification, error) {
		return notes[i%n].Resign(e.id.Keys, wxpaysim.PublicKeyMode(), time.Now())
	})
	if err != nil {
		return l, err
	}
	reqs = raw.encodeAll(dups)
	l.Dup = m.measure(func() Result {
		return closedLoop(len(reqs), c, func(i int) error { return raw.send(reqs[i]) })
	})
	ceil := &ceiling{db: t.ceiling, prefix: prefix}
	l.Ceiling = m.measure(func() Result { return closedLoop(n, c, ceil.op) })
	return l, nil
}

// newNotification signs a fresh payment of order prefix+i.
func newNotification(e *env, prefix string) func(i int) (wxpaysim.Notification, error) {
	k := e.id.Keys
	return func(i int) (wxpaysim.Notification, error) {
		no := fmt.Sprintf("%s%07d", prefix, i)
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
