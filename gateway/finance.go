package gateway

import (
	"context"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/gin-gonic/gin"

	"paygateway/ledger"
)

// Finance serves the finance API: ledger lists with filters, cursors and
// CSV export, the per-order timeline, daily totals and reconciliations.
// Every request is authenticated by API key and written to the audit log.
type Finance struct {
	// Reconciler runs reconciliations; nil answers them 503.
	Reconciler *Reconciler
	// ExportTimeout bounds a CSV export (default 5 min); JSON pages use
	// the API timeout.
	ExportTimeout time.Duration
	// MaxExports caps the CSV exports running at once on this instance
	// (default 4); more get 429. An export runs a query per 1,000 rows
	// for as long as its client keeps reading.
	MaxExports int

	exports slots // made by Routes
	runs    slots // reconciliations run by hand at once: one per instance
}

// runsBusy answers a reconciliation asked for while another runs here: a
// run holds a bill (up to 256 MiB) and a back-office slot for minutes.
var runsBusy = &Error{Code: CodeRateLimited, Message: "a reconciliation is running on this instance; retry after 60 s",
	RetryAfter: time.Minute}

// exportsBusy answers an export refused for want of a slot.
var exportsBusy = &Error{Code: CodeRateLimited, Message: "too many CSV exports running; retry after 10 s",
	RetryAfter: 10 * time.Second}

// Routes adds the finance routes; use it in Deps.Routes.
func (f *Finance) Routes(r *gin.Engine, d *Deps) {
	if f.MaxExports <= 0 {
		f.MaxExports = 4
	}
	f.exports = newSlots(f.MaxExports)
	f.runs = newSlots(1)
	read := r.Group("/v1", timeoutUnlessLong(d.APITimeout))
	read.Use(d.keyed("ledger", d.Limits.Ledger, true, RoleFinance, RoleOps)...)
	addList(read, d, f, "/ledger/payments", paymentList)
	addList(read, d, f, "/ledger/refunds", refundList)
	addList(read, d, f, "/ledger/notifications", noticeList)
	addList(read, d, f, "/ledger/outbox-jobs", outboxList)
	addList(read, d, f, "/ledger/anomalies", anomalyList)
	read.POST("/ledger/anomalies/:id/resolve", timeout(d.APITimeout), d.resolveAnomaly)
	read.GET("/ledger/payments/:out_trade_no/timeline", timeout(d.APITimeout), d.timeline)
	read.GET("/ledger/totals", timeout(d.APITimeout), d.totals)
	read.GET("/reconciliations/:date", timeout(d.APITimeout), d.getReconciliation)
	read.POST("/reconciliations", f.runReconciliation(d))
	ops := r.Group("/v1", timeoutUnlessLong(d.APITimeout))
	ops.Use(d.keyed("ledger", d.Limits.Ledger, true, RoleOps)...)
	addList(ops, d, f, "/ledger/audit", auditList)
	r.GET("/openapi.json", serveOpenAPI)
}

// listDef describes one ledger list: its filters, how to stream it, and
// its CSV columns.
type listDef[T any] struct {
	name    string
	filters listFilters
	each    func(s *ledger.Store) func(context.Context, ledger.ListQuery, func(T) error) error
	id      func(T) uint64
	header  []string
	row     func(T) []string
}

func addList[T any](g *gin.RouterGroup, d *Deps, f *Finance, path string, def listDef[T]) {
	g.GET(path, func(c *gin.Context) {
		req, err := parseList(c, def.filters)
		if err != nil {
			writeError(c, err)
			return
		}
		if req.csv {
			if !f.exports.take() {
				writeError(c, exportsBusy)
				return
			}
			defer f.exports.give()
			exportList(c, d, f, def, req)
			return
		}
		ctx, cancel := context.WithTimeout(c.Request.Context(), d.APITimeout)
		defer cancel()
		pageList(c.Request.WithContext(ctx), c, d, def, req)
	})
}

// pageList answers one page: {"items":[…],"next_cursor":"…"}; next_cursor
// is empty on the last page.
func pageList[T any](r *http.Request, c *gin.Context, d *Deps, def listDef[T], req listRequest) {
	q := req.query
	q.Limit = req.limit + 1
	items := make([]T, 0, min(req.limit, 128))
	more := false
	err := def.each(d.Store)(r.Context(), q, func(t T) error {
		if len(items) == req.limit {
			more = true
			return nil
		}
		items = append(items, t)
		return nil
	})
	if err != nil {
		writeError(c, ledgerError(err))
		return
	}
	next := ""
	if more {
		next = encodeCursor(def.id(items[len(items)-1]))
	}
	c.JSON(http.StatusOK, gin.H{"items": items, "next_cursor": next})
}

// exportList streams every matching row (from the cursor, if given) as
// CSV. The write deadline is extended so a long export is not cut by the
// server's WriteTimeout; a failure midway aborts the connection so the
// client sees an incomplete download, never a short file that looks whole.
func exportList[T any](c *gin.Context, d *Deps, f *Finance, def listDef[T], req listRequest) {
	limit := f.ExportTimeout
	if limit <= 0 {
		limit = 5 * time.Minute
	}
	ctx, cancel := context.WithTimeout(c.Request.Context(), limit)
	defer cancel()
	_ = http.NewResponseController(c.Writer).SetWriteDeadline(time.Now().Add(limit))
	rows := 0 // every matching row
	if _, set := c.GetQuery("limit"); set {
		rows = req.limit
	}
	var out *csvStream
	err := readChunks(ctx, d, def, req.query, rows, func(chunk []T) error {
		if out == nil {
			out = startCSV(c, def.name+".csv", def.header)
		}
		for _, t := range chunk {
			if err := out.write(def.row(t)); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil {
		if out == nil {
			out = startCSV(c, def.name+".csv", def.header)
		}
		err = out.finish()
	}
	if err != nil {
		if out == nil {
			writeError(c, ledgerError(err))
			return
		}
		slog.ErrorContext(ctx, "csv export failed midway", "list", def.name, "rows", out.rows, "err", err)
		panic(http.ErrAbortHandler)
	}
}

// exportChunk is how many rows an export reads per query.
const exportChunk = 1000

// readChunks reads up to max rows of a list (0: all), exportChunk at a
// time in id order, each read its own query bounded by the API timeout,
// and hands each chunk to write with no database connection held: a
// client that reads slowly holds one chunk of memory, never a connection
// (on SQLite, the only one). Rows added during an export are included if
// their id comes after the chunk being read, like cursor pages.
func readChunks[T any](ctx context.Context, d *Deps, def listDef[T], q ledger.ListQuery, max int, write func([]T) error) error {
	for {
		q.Limit = exportChunk
		if max > 0 {
			q.Limit = min(exportChunk, max)
		}
		chunk := make([]T, 0, q.Limit)
		qctx, cancel := context.WithTimeout(ctx, d.APITimeout)
		err := def.each(d.Store)(qctx, q, func(t T) error { chunk = append(chunk, t); return nil })
		cancel()
		if err != nil || len(chunk) == 0 {
			return err
		}
		if err := write(chunk); err != nil {
			return err
		}
		if max > 0 {
			if max -= len(chunk); max == 0 {
				return nil
			}
		}
		if len(chunk) < q.Limit {
			return nil
		}
		q.AfterID = def.id(chunk[len(chunk)-1])
	}
}

var paymentList = listDef[ledger.PaymentListItem]{
	name:    "payments",
	filters: listFilters{keys: []string{"out_trade_no", "transaction_id", "payer_openid"}, states: ledger.PaymentStates},
	each: func(s *ledger.Store) func(context.Context, ledger.ListQuery, func(ledger.PaymentListItem) error) error {
		return s.EachPayment
	},
	id: func(p ledger.PaymentListItem) uint64 { return p.ID },
	header: []string{"id", "out_trade_no", "transaction_id", "state", "registered", "expected_amount", "amount_total",
		"payer_total", "refunded_total", "currency", "payer_openid", "success_time", "created_at", "updated_at"},
	row: func(p ledger.PaymentListItem) []string {
		return []string{num(int64(p.ID)), cell(p.OutTradeNo), cell(p.TransactionID), string(p.State),
			strconv.FormatBool(p.Registered), num(p.ExpectedAmount), num(p.AmountTotal), num(p.PayerTotal),
			num(p.RefundedTotal), cell(p.Currency), cell(p.PayerOpenID), tsp(p.SuccessTime), ts(p.CreatedAt), ts(p.UpdatedAt)}
	},
}

var refundList = listDef[ledger.RefundListItem]{
	name:    "refunds",
	filters: listFilters{keys: []string{"out_trade_no", "transaction_id", "out_refund_no"}, states: ledger.RefundStates},
	each: func(s *ledger.Store) func(context.Context, ledger.ListQuery, func(ledger.RefundListItem) error) error {
		return s.EachRefund
	},
	id: func(r ledger.RefundListItem) uint64 { return r.ID },
	header: []string{"id", "out_refund_no", "out_trade_no", "transaction_id", "refund_id", "state", "amount", "total",
		"reason", "requester", "attempts", "last_error", "success_time", "created_at", "updated_at"},
	row: func(r ledger.RefundListItem) []string {
		return []string{num(int64(r.ID)), cell(r.OutRefundNo), cell(r.OutTradeNo), cell(r.TransactionID), cell(r.RefundID),
			cell(r.State), num(r.Amount), num(r.Total), cell(r.Reason), cell(r.Requester), num(int64(r.Attempts)),
			cell(r.LastError), tsp(r.SuccessTime), ts(r.CreatedAt), ts(r.UpdatedAt)}
	},
}

var noticeList = listDef[ledger.NoticeListItem]{
	name:    "notifications",
	filters: listFilters{keys: []string{"out_trade_no", "transaction_id", "out_refund_no"}, source: true},
	each: func(s *ledger.Store) func(context.Context, ledger.ListQuery, func(ledger.NoticeListItem) error) error {
		return s.EachNotice
	},
	id: func(n ledger.NoticeListItem) uint64 { return n.ID },
	header: []string{"id", "notify_id", "source", "event_type", "resource_type", "summary", "out_trade_no",
		"transaction_id", "out_refund_no", "create_time", "received_at", "plaintext"},
	row: func(n ledger.NoticeListItem) []string {
		return []string{num(int64(n.ID)), cell(n.NotifyID), cell(n.Source), cell(n.EventType), cell(n.ResourceType),
			cell(n.Summary), cell(n.OutTradeNo), cell(n.TransactionID), cell(n.OutRefundNo), ts(n.CreateTime),
			ts(n.ReceivedAt), cell(n.Plaintext)}
	},
}

var outboxList = listDef[ledger.OutboxJobListItem]{
	name:    "outbox-jobs",
	filters: listFilters{keys: []string{"out_trade_no", "out_refund_no"}, states: ledger.OutboxStates, kind: true},
	each: func(s *ledger.Store) func(context.Context, ledger.ListQuery, func(ledger.OutboxJobListItem) error) error {
		return s.EachOutboxJob
	},
	id: func(j ledger.OutboxJobListItem) uint64 { return j.ID },
	header: []string{"id", "kind", "job_key", "out_trade_no", "out_refund_no", "state", "attempts", "last_error",
		"next_run_at", "done_at", "created_at", "updated_at", "payload"},
	row: func(j ledger.OutboxJobListItem) []string {
		return []string{num(int64(j.ID)), cell(j.Kind), cell(j.JobKey), cell(j.OutTradeNo), cell(j.OutRefundNo),
			cell(j.State), num(int64(j.Attempts)), cell(j.LastError), ts(j.NextRunAt), tsp(j.DoneAt),
			ts(j.CreatedAt), ts(j.UpdatedAt), cell(j.Payload)}
	},
}

// anomalyList is what needs a person: a second payment of an order, a
// payment by another payer than registered, an amount that differs, a
// refund status the ledger cannot apply, a refund it never made.
var anomalyList = listDef[ledger.AnomalyListItem]{
	name:    "anomalies",
	filters: listFilters{keys: []string{"out_trade_no"}, states: ledger.AnomalyStates, kind: true},
	each: func(s *ledger.Store) func(context.Context, ledger.ListQuery, func(ledger.AnomalyListItem) error) error {
		return s.EachAnomaly
	},
	id: func(a ledger.AnomalyListItem) uint64 { return a.ID },
	header: []string{"id", "kind", "ref", "out_trade_no", "detail", "seen_count", "first_seen", "last_seen",
		"state", "resolved_at", "resolved_by", "resolution"},
	row: func(a ledger.AnomalyListItem) []string {
		return []string{num(int64(a.ID)), cell(a.Kind), cell(a.Ref), cell(a.OutTradeNo), cell(a.Detail),
			num(int64(a.SeenCount)), ts(a.FirstSeen), ts(a.LastSeen), cell(a.State), tsp(a.ResolvedAt),
			cell(a.ResolvedBy), cell(a.Resolution)}
	},
}

// auditList is who called the API keys' routes, when, and how it ended;
// ops only (reading it is itself audited).
var auditList = listDef[ledger.AuditEntry]{
	name:    "audit",
	filters: listFilters{keys: []string{"principal"}},
	each: func(s *ledger.Store) func(context.Context, ledger.ListQuery, func(ledger.AuditEntry) error) error {
		return s.EachAudit
	},
	id: func(e ledger.AuditEntry) uint64 { return e.ID },
	// target last: a script reading the columns before it by position still works.
	header: []string{"id", "principal", "role", "method", "path", "status", "request_id", "remote_addr",
		"created_at", "finished_at", "target"},
	row: func(e ledger.AuditEntry) []string {
		return []string{num(int64(e.ID)), cell(e.Principal), cell(e.Role), cell(e.Method), cell(e.Path),
			num(int64(e.Status)), cell(e.RequestID), cell(e.RemoteAddr), ts(e.CreatedAt), tsp(e.FinishedAt), cell(e.Target)}
	},
}

// timeline lists everything that happened to one order, in time order.
func (d *Deps) timeline(c *gin.Context) {
	no := c.Param("out_trade_no")
	if !keyPattern.MatchString(no) {
		writeError(c, invalid("out_trade_no must be 1-64 of A-Z a-z 0-9 _ - | * @ . :"))
		return
	}
	if err := onlyParams(c, "format"); err != nil {
		writeError(c, err)
		return
	}
	events, err := d.Store.Timeline(c.Request.Context(), no)
	if err != nil {
		writeError(c, ledgerError(err))
		return
	}
	if len(events) == 0 {
		writeError(c, &Error{Code: CodeNotFound, Message: "no such order"})
		return
	}
	if csvRequested(c) {
		out := startCSV(c, "timeline-"+no+".csv", []string{"at", "type", "key", "summary"})
		for _, e := range events {
			_ = out.write(timelineRow(e))
		}
		_ = out.finish()
		return
	}
	c.JSON(http.StatusOK, gin.H{"out_trade_no": no, "events": events})
}

// timelineRow is one event's CSV row: at, type, key, summary.
func timelineRow(e ledger.TimelineEvent) []string {
	return []string{ts(e.At), e.Type, cell(e.Key), cell(e.Summary)}
}

// maxTotalsDays bounds one totals request.
const maxTotalsDays = 366

// totals answers paid, refunded and net per business day (UTC+8).
func (d *Deps) totals(c *gin.Context) {
	if err := onlyParams(c, "from", "to", "format"); err != nil {
		writeError(c, err)
		return
	}
	now := d.Store.Now()
	from, err := parseDay(c.Query("from"), now)
	if err != nil {
		writeError(c, invalid("from: "+publicMessage(err)))
		return
	}
	to := ledger.DayOf(now)
	if v, ok := c.GetQuery("to"); ok {
		if to, err = parseDay(v, now); err != nil {
			writeError(c, invalid("to: "+publicMessage(err)))
			return
		}
	}
	a, _ := ledger.DayStart(from)
	b, _ := ledger.DayStart(to)
	if b.Before(a) || b.Sub(a) >= maxTotalsDays*24*time.Hour {
		writeError(c, invalid("from must not be after to, and the range at most 366 days"))
		return
	}
	days, err := d.Store.DailyTotals(c.Request.Context(), from, to)
	if err != nil {
		writeError(c, ledgerError(err))
		return
	}
	if csvRequested(c) {
		out := startCSV(c, "totals-"+from+"-"+to+".csv", []string{"day", "paid_count", "paid", "refund_count", "refunded", "net"})
		for _, t := range days {
			_ = out.write([]string{t.Day, num(t.PaidCount), num(t.Paid), num(t.RefundCount), num(t.Refunded), num(t.Net)})
		}
		_ = out.finish()
		return
	}
	c.JSON(http.StatusOK, gin.H{"timezone": "UTC+8", "currency": "CNY", "unit": "fen", "days": days})
}

// onlyParams refuses query parameters outside allowed, and repeats.
func onlyParams(c *gin.Context, allowed ...string) error {
	for name, vals := range c.Request.URL.Query() {
		ok := false
		for _, a := range allowed {
			ok = ok || a == name
		}
		if !ok {
			return invalid("unknown parameter " + strconv.Quote(name))
		}
		if len(vals) != 1 {
			return invalid("parameter " + name + " given more than once")
		}
		if name == "format" && vals[0] != "json" && vals[0] != "csv" {
			return invalid("format must be json or csv")
		}
	}
	return nil
}

func csvRequested(c *gin.Context) bool {
	if f, ok := c.GetQuery("format"); ok {
		return f == "csv"
	}
	return wantsCSV(c)
}
