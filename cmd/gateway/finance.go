package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"time"

	"paygateway/gateway"
	"paygateway/gateway/wechatpay"
	"paygateway/ledger"
)

// FinanceConfig configures the finance API and the daily reconciliation.
type FinanceConfig struct {
	// DailyReconcileAt is the time of day (UTC+8, "HH:MM") from which the
	// previous day's trade bill is due; "" means 10:30 (WeChat Pay
	// publishes bills from about 10:00), "off" disables the job. The job
	// also runs on start, for every due day without a report.
	DailyReconcileAt string `yaml:"daily_reconcile_at"`
	// ReconcileRetry is the wait before retrying a failed day; it doubles
	// with each further failure up to 8 times. Default 15m.
	ReconcileRetry time.Duration `yaml:"reconcile_retry"`
	// ReconcileLookBack is how many days, up to yesterday, the daily job
	// keeps reconciled: on start and each day it runs those without a
	// report, none before reconcile_from's day when it is set, else none
	// before the ledger's first payment. Default 30, at most
	// 90 (WeChat Pay keeps bills 3 months).
	ReconcileLookBack int `yaml:"reconcile_look_back"`
	// ReconcileFrom is when the gateway began taking this merchant's
	// payments (RFC 3339, or a day YYYY-MM-DD meaning its start in UTC+8).
	// Set it when the gateway replaces another system: reconciliation
	// never runs days before it by itself, and reports, rather than
	// repairs, bill payments from before it that the ledger does not know
	// (the old system fulfilled them). "" means the ledger's first payment
	// day, which cannot tell the old system's payments of that day apart.
	ReconcileFrom string `yaml:"reconcile_from"`
	// ReconcileTimeout bounds one reconciliation, bill download included;
	// default 10m, and longer than wechatpay.bill_timeout.
	ReconcileTimeout time.Duration `yaml:"reconcile_timeout"`
	// ExportTimeout bounds one CSV export; default 5m.
	ExportTimeout time.Duration `yaml:"export_timeout"`
	// MaxExports caps CSV exports running at once per instance; default 4.
	MaxExports int `yaml:"max_exports"`
	// MaxRequests caps the finance and ops requests served at once per
	// instance (exports included); default 16. More get 503 at once.
	MaxRequests int `yaml:"max_requests"`
}

// dailyAt parses DailyReconcileAt into an offset after midnight; ok is
// false when the job is off.
func (f FinanceConfig) dailyAt() (time.Duration, bool, error) {
	switch f.DailyReconcileAt {
	case "off":
		return 0, false, nil
	case "":
		return 10*time.Hour + 30*time.Minute, true, nil
	}
	t, err := time.Parse("15:04", f.DailyReconcileAt)
	if err != nil {
		return 0, false, fmt.Errorf("config: finance.daily_reconcile_at (GATEWAY_FINANCE_DAILY_RECONCILE_AT): want HH:MM or off")
	}
	return time.Duration(t.Hour())*time.Hour + time.Duration(t.Minute())*time.Minute, true, nil
}

// takeOver parses ReconcileFrom; zero when unset.
func (f FinanceConfig) takeOver() (time.Time, error) {
	if f.ReconcileFrom == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, f.ReconcileFrom); err == nil {
		return t.UTC(), nil
	}
	start, err := ledger.DayStart(f.ReconcileFrom)
	if err != nil || len(f.ReconcileFrom) != len(time.DateOnly) {
		return time.Time{}, errors.New("config: finance.reconcile_from (GATEWAY_FINANCE_RECONCILE_FROM): want RFC 3339 or YYYY-MM-DD")
	}
	return start, nil
}

// dbKeys are API keys created with `gateway apikey create`.
func (m *Main) dbKeys() gateway.KeyLookup {
	return gateway.LimitLookups(gateway.DBKeys{Usage: &ledger.KeyUsage{Store: m.Store}}, m.Config.Auth.keyLookups())
}

// wireFinance adds the finance routes and, when the merchant key is
// configured, the reconciler and its daily job.
func (m *Main) wireFinance(ctx context.Context) error {
	f := m.Config.Finance
	at, daily, err := f.dailyAt()
	if err != nil {
		return err
	}
	rec, err := m.newReconciler(ctx)
	if err != nil {
		return err
	}
	fin := &gateway.Finance{Reconciler: rec, ExportTimeout: f.ExportTimeout, MaxExports: f.MaxExports}
	m.Deps.Routes = append(m.Deps.Routes, fin.Routes)
	if rec == nil {
		slog.Info("reconciliation off: wechatpay.merchant_serial and merchant_private_key_file are not set")
		return nil
	}
	if daily {
		cfg := gateway.DailyConfig{At: at, Retry: f.ReconcileRetry, LookBack: f.ReconcileLookBack, Now: m.Store.Now}
		m.AddJob(func(ctx context.Context) { rec.DailyReconcile(ctx, cfg) })
	}
	return nil
}

func (m *Main) newReconciler(ctx context.Context) (*gateway.Reconciler, error) {
	client := m.Wechat
	if client == nil { // the reconcile subcommand does not wire the whole Main
		var err error
		if client, err = newWechatClient(ctx, m.Config.WechatPay); err != nil || client == nil {
			return nil, err
		}
	}
	from, err := m.Config.Finance.takeOver()
	if err != nil {
		return nil, err
	}
	return &gateway.Reconciler{Store: m.Store, Bills: tradeBills{client}, Timeout: m.Config.Finance.ReconcileTimeout,
		TakeOver: from, AppID: m.Config.WechatPay.AppID, Refunds: wechatpay.RefundAdapter{Client: client},
		Confirm: paidAtWechat{client}.confirm}, nil
}

// paidAtWechat confirms a bill payment with WeChat Pay's signed answer to
// an order query before reconciliation repairs it.
type paidAtWechat struct{ c orderQuerier }

// orderQuerier is the order query of *wechatpay.Client.
type orderQuerier interface {
	QueryOrder(ctx context.Context, outTradeNo string) (*wechatpay.Transaction, error)
}

func (p paidAtWechat) confirm(ctx context.Context, bp ledger.BillPayment) (ledger.Confirmed, error) {
	tx, err := p.c.QueryOrder(ctx, bp.OutTradeNo)
	switch {
	case err == nil && tx.OutTradeNo != bp.OutTradeNo: // an answer about another order confirms nothing
		return ledger.Confirmed{}, fmt.Errorf("%w: the answer is about order %q", ledger.ErrBillUnconfirmed, tx.OutTradeNo)
	case errors.Is(err, wechatpay.ErrNotFound):
		return ledger.Confirmed{}, fmt.Errorf("%w: no such order", ledger.ErrBillUnconfirmed)
	case rowRefused(err):
		return ledger.Confirmed{}, fmt.Errorf("%w: WeChat Pay refused the order query: %w", ledger.ErrBillUnconfirmed, err)
	case err != nil:
		return ledger.Confirmed{}, err
	case !tx.Paid():
		return ledger.Confirmed{}, fmt.Errorf("%w: trade_state %s", ledger.ErrBillUnconfirmed, tx.TradeState)
	// The payer too: the repair records the row's, and whom it names may
	// ask for refunds.
	case tx.TransactionID != bp.TransactionID || tx.AmountTotal != bp.Amount || tx.AppID != bp.AppID ||
		tx.PayerOpenID != bp.OpenID:
		return ledger.Confirmed{}, fmt.Errorf("%w: paid by transaction %s, %d fen, app %s, payer %s", ledger.ErrBillUnconfirmed,
			tx.TransactionID, tx.AmountTotal, tx.AppID, tx.PayerOpenID)
	// And the merchant and currency the repair records from the row.
	case tx.MchID != bp.MchID || tx.Currency != bp.Currency:
		return ledger.Confirmed{}, fmt.Errorf("%w: paid to merchant %s in %s", ledger.ErrBillUnconfirmed, tx.MchID, tx.Currency)
	// The time too: the row's decides whether the old system took the
	// payment (before the take-over), and is recorded as its success_time.
	case !atSuccessTime(tx, bp):
		return ledger.Confirmed{}, fmt.Errorf("%w: paid at success_time %s, the row says %s", ledger.ErrBillUnconfirmed,
			tx.SuccessTime.Format(time.RFC3339), bp.Time.UTC().Format(time.RFC3339))
	}
	return ledger.Confirmed{Refunded: tx.TradeState == "REFUND", PayerTotal: tx.PayerTotal}, nil
}

// rowRefused reports WeChat Pay's signed 400 to the query of one order
// (PARAM_ERROR, say): the row is not repaired, and the run goes on with
// the others (failing the run left every repair after the row undone,
// day after day). The query names only the order and the merchant, and
// the day's bill was just downloaded with the same merchant and key, so a
// 400 here is about the row. Any other refusal (401, 403, 405, 415: the
// merchant's rights or this client), an unsigned one, a quota or an
// outage still fails the run, which the daily job runs again later.
func rowRefused(err error) bool {
	var be *wechatpay.BusinessError
	return errors.As(err, &be) && be.Verified && be.Status == http.StatusBadRequest
}

// atSuccessTime reports whether the row's time is WeChat Pay's
// success_time, within ledger.BillTimeSlack. An answer without one
// confirms no time.
func atSuccessTime(tx *wechatpay.Transaction, bp ledger.BillPayment) bool {
	d := tx.SuccessTime.Sub(bp.Time)
	return !tx.SuccessTime.IsZero() && d <= ledger.BillTimeSlack && d >= -ledger.BillTimeSlack
}

// tradeBills marks WeChat's NO_STATEMENT_EXIST (no transactions that day,
// or the bill not generated yet) as gateway.ErrNoStatement, when WeChat
// Pay signed it: an unsigned one (a proxy's) fails the run, which is
// retried, since "no bill" can settle a day for good.
type tradeBills struct{ c *wechatpay.Client }

func (t tradeBills) TradeBill(ctx context.Context, day string) ([]byte, error) {
	data, err := t.c.TradeBill(ctx, day)
	var be *wechatpay.BusinessError
	if errors.As(err, &be) && be.Code == "NO_STATEMENT_EXIST" && be.Verified {
		return nil, fmt.Errorf("%w: %w", gateway.ErrNoStatement, err)
	}
	return data, err
}

// apikeyCmd: `gateway apikey create --name N --role R`, `gateway apikey
// revoke --name N`, `gateway apikey list`.
func apikeyCmd(ctx context.Context, args []string, out io.Writer) error {
	if len(args) == 0 {
		return errors.New("apikey: want create, revoke or list")
	}
	sub := args[0]
	fs := flag.NewFlagSet("apikey "+sub, flag.ContinueOnError)
	name := fs.String("name", "", "key name (who holds it)")
	role := fs.String("role", "", "finance, ops, service or metrics")
	m, err := openForCommand(ctx, fs, args[1:])
	if err != nil {
		return err
	}
	defer m.Close()
	switch sub {
	case "create", "revoke":
		// The role first: a long name is cut off the end of the column.
		return audited(ctx, m.Store, "apikey "+sub, "role="+*role+" name="+*name, func() error {
			if sub == "create" && configuredName(m.Config.Auth.APIKeys, *name) {
				return fmt.Errorf("apikey create: auth.api_keys has a key named %s; a name has one active key: choose another", *name)
			}
			return changeKey(ctx, m.Store, sub, *name, *role, out)
		})
	case "list":
		keys, err := m.Store.APIKeys(ctx)
		if err != nil {
			return err
		}
		for _, k := range keys {
			fmt.Fprintf(out, "%s\t%s\tcreated %s\trevoked %s\tlast used %s\n", k.Name, k.Role,
				k.CreatedAt.Format(time.RFC3339), fmtTime(k.RevokedAt), fmtTime(k.LastUsedAt))
		}
		return nil
	}
	return fmt.Errorf("apikey: unknown subcommand %q (want create, revoke or list)", sub)
}

// changeKey creates or revokes the key named name.
func changeKey(ctx context.Context, s *ledger.Store, sub, name, role string, out io.Writer) error {
	if sub == "create" {
		return createKey(ctx, s, name, role, out)
	}
	n, err := s.RevokeAPIKeys(ctx, name)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "revoked %d key(s) named %s\n", n, name)
	return nil
}

func createKey(ctx context.Context, s *ledger.Store, name, role string, out io.Writer) error {
	if !gateway.KeyNamePattern.MatchString(name) {
		return errors.New("apikey create: --name must be 1-64 of A-Z a-z 0-9 _ . - @")
	}
	if !gateway.ValidRole(gateway.Role(role)) {
		return errors.New("apikey create: --role must be finance, ops, service or metrics")
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return err
	}
	key := "gwk_" + base64.RawURLEncoding.EncodeToString(raw)
	if _, err := s.CreateAPIKey(ctx, name, role, gateway.HashKey(key)); err != nil {
		if errors.Is(err, ledger.ErrConflict) {
			return fmt.Errorf("apikey create: %s already has an active key; revoke it first", name)
		}
		return err
	}
	fmt.Fprintf(out, "%s\n", key)
	fmt.Fprintf(os.Stderr, "created %s key %s; the key is shown only this once\n", role, name)
	return nil
}

// configuredName reports whether auth.api_keys (name:role:hash entries)
// has a key named name.
func configuredName(specs []string, name string) bool {
	for _, spec := range specs {
		if n, _, _ := strings.Cut(strings.TrimSpace(spec), ":"); n == name {
			return true
		}
	}
	return false
}

// checkKeyNames refuses a database key active under the name of a key in
// auth.api_keys: two keys under one name would share its rate limit, and
// the audit log and outbox replays could not tell which acted.
func checkKeyNames(ctx context.Context, s *ledger.Store, specs []string) error {
	keys, err := s.APIKeys(ctx)
	if err != nil {
		return err
	}
	for _, k := range keys {
		if k.RevokedAt == nil && configuredName(specs, k.Name) {
			return fmt.Errorf("config: auth.api_keys (GATEWAY_API_KEYS) names %s, which has an active database key too: "+
				"revoke that one (gateway apikey revoke --name %s) or rename the configured one", k.Name, k.Name)
		}
	}
	return nil
}

func fmtTime(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return t.Format(time.RFC3339)
}

// reconcileCmd: `gateway reconcile --date YYYY-MM-DD` runs one day's
// reconciliation and prints the report as JSON lines of mismatches.
func reconcileCmd(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("reconcile", flag.ContinueOnError)
	date := fs.String("date", "", "business day YYYY-MM-DD (UTC+8); default yesterday")
	m, err := openForCommand(ctx, fs, args)
	if err != nil {
		return err
	}
	defer m.Close()
	if *date == "" {
		*date = ledger.DayOf(m.Store.Now().Add(-24 * time.Hour))
	}
	if _, err := ledger.DayStart(*date); err != nil {
		return fmt.Errorf("reconcile: --date: %w", err)
	}
	// Its calls and the bill's rows use the WeChat Pay settings as serve
	// does: checked the same way.
	if err := m.Config.Validate(); err != nil {
		return err
	}
	rec, err := m.newReconciler(ctx)
	if err != nil {
		return err
	}
	if rec == nil {
		return errors.New("reconcile: wechatpay.merchant_serial and merchant_private_key_file must be set")
	}
	var rep *ledger.Reconciliation
	err = audited(ctx, m.Store, "reconcile", "date="+*date, func() (err error) {
		rep, err = rec.Run(ctx, *date, "cli:"+currentUser())
		return err
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "%s %s: bill %d payments %d refunds, ledger %d payments %d refunds, %d mismatches, %d repaired\n",
		rep.Date, rep.Status, rep.BillPayments, rep.BillRefunds, rep.LedgerPayments, rep.LedgerRefunds, rep.Mismatches, rep.Repaired)
	for _, it := range rep.Items {
		fmt.Fprintf(out, "%s\tout_trade_no=%s\ttransaction_id=%s\tout_refund_no=%s\tbill=%s\tledger=%s\t%s %s\n",
			it.Kind, it.OutTradeNo, it.TransactionID, it.OutRefundNo, side(it.Bill), side(it.Ledger), it.Repair, it.RepairDetail)
	}
	return nil
}

func side(s *ledger.ItemSide) string {
	if s == nil {
		return "-"
	}
	return fmt.Sprintf("%s/%d", s.State, s.Amount)
}

// openForCommand parses --config plus the command's flags, loads the
// config and opens the (migrated) ledger.
func openForCommand(ctx context.Context, fs *flag.FlagSet, args []string) (*Main, error) {
	path := fs.String("config", os.Getenv("GATEWAY_CONFIG"), "YAML config file (env GATEWAY_CONFIG)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("%s: unexpected arguments %s", fs.Name(), strings.Join(fs.Args(), " "))
	}
	cfg, err := Load(*path)
	if err != nil {
		return nil, err
	}
	if err := databaseNamed(fs.Name(), *path, cfg); err != nil {
		return nil, err
	}
	setupLogging(cfg.Log)
	warnUnknownEnv()
	if err := cfg.loadSecrets(); err != nil {
		return nil, err
	}
	m := &Main{Config: cfg, NoMigrate: true}
	if err := m.openStore(ctx); err != nil {
		m.Close()
		return nil, err
	}
	return m, nil
}
