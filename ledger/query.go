package ledger

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"gorm.io/gorm"
)

// ListQuery selects rows of a ledger list. Empty fields do not filter.
// Rows come in id order after AfterID (keyset pagination: no OFFSET scans,
// and a row inserted meanwhile never shifts the rows of later pages).
type ListQuery struct {
	State         string
	From, To      time.Time // From inclusive, To exclusive, on the list's time column
	OutTradeNo    string
	TransactionID string
	OutRefundNo   string
	PayerOpenID   string
	Source        string // notifications
	Kind          string // outbox jobs
	Principal     string // audit log
	AfterID       uint64
	Limit         int // 0 = every matching row
}

// listSpec maps the filters a list supports onto its columns; an empty
// column means the list has no such filter.
type listSpec struct {
	name, timeCol string
	// timeIndexed: an index leads with timeCol, so the first id at or
	// after a time is cheap to find (see startAtFrom). Without one, a
	// list from yesterday reads every older row in id order first.
	timeIndexed                                         bool
	state, outRefundNo, transactionID, payerOpenID, src string
	kind, principal                                     string
}

var (
	paymentsSpec = listSpec{name: "payments", timeCol: "created_at", timeIndexed: true, state: "state",
		transactionID: "transaction_id", payerOpenID: "payer_openid"}
	refundsSpec = listSpec{name: "refunds", timeCol: "created_at", timeIndexed: true, state: "state",
		transactionID: "transaction_id", outRefundNo: "out_refund_no"}
	noticesSpec = listSpec{name: "notifications", timeCol: "received_at", timeIndexed: true,
		transactionID: "transaction_id", outRefundNo: "out_refund_no", src: "source"}
	outboxSpec = listSpec{name: "outbox_jobs", timeCol: "created_at", timeIndexed: true, state: "state",
		outRefundNo: "out_refund_no", kind: "kind"}
	auditSpec = listSpec{name: "audit_log", timeCol: "created_at", timeIndexed: true, principal: "principal"}
	// Anomalies are few (a person deals with each): a scan is fine.
	anomaliesSpec = listSpec{name: "anomalies", timeCol: "last_seen", state: "state", kind: "kind"}
)

// scope applies q to tx; every value is a bound parameter.
func (sp listSpec) scope(tx *gorm.DB, q ListQuery) (*gorm.DB, error) {
	conds := []struct{ col, val, filter string }{
		{sp.state, q.State, "state"}, {"out_trade_no", q.OutTradeNo, "out_trade_no"},
		{sp.transactionID, q.TransactionID, "transaction_id"}, {sp.outRefundNo, q.OutRefundNo, "out_refund_no"},
		{sp.payerOpenID, q.PayerOpenID, "payer_openid"}, {sp.src, q.Source, "source"}, {sp.kind, q.Kind, "kind"},
		{sp.principal, q.Principal, "principal"},
	}
	for _, c := range conds {
		if c.val == "" {
			continue
		}
		if c.col == "" {
			return nil, fmt.Errorf("list %s: no %s filter", sp.name, c.filter)
		}
		tx = tx.Where(c.col+" = ?", c.val)
	}
	tx = sp.during(tx, q)
	if q.AfterID > 0 {
		tx = tx.Where("id > ?", q.AfterID)
	}
	tx = tx.Order("id")
	if q.Limit > 0 {
		tx = tx.Limit(q.Limit)
	}
	return tx, nil
}

// during applies q's time range to tx.
func (sp listSpec) during(tx *gorm.DB, q ListQuery) *gorm.DB {
	if !q.From.IsZero() {
		tx = tx.Where(sp.timeCol+" >= ?", ceilMicro(q.From))
	}
	if !q.To.IsZero() {
		tx = tx.Where(sp.timeCol+" < ?", ceilMicro(q.To))
	}
	return tx
}

// ceilMicro is t in UTC, raised to its next whole microsecond: rows hold
// microseconds (dbTime), so t' <= row is t <= row, and row < t' is row <
// t. A finer bound would be cut by MariaDB (rounded by MySQL) to the
// column, moving it past the row of its own microsecond.
func ceilMicro(t time.Time) time.Time {
	if c := dbTime(t); c.Before(t) {
		return c.Add(time.Microsecond)
	}
	return t.UTC()
}

// startAtFrom starts the first page of a list from a time at the first id
// in its time range, found through the index on the time column: the same
// rows (none in the range has a smaller id), but a page read in id order,
// on the primary key or an index such as (principal, id), starts at From
// instead of filtering every older row first. Later pages start at their
// cursor. ok is false when no row is in the range. The id is read by a
// statement of its own and bound as a constant: MariaDB does not bound a
// scan by a subquery's value (id >= (SELECT MIN(id) …) read all 1,500
// older rows of 3,000 for a page of 101).
func (sp listSpec) startAtFrom(ctx context.Context, db *gorm.DB, q ListQuery) (_ ListQuery, ok bool, err error) {
	if !sp.timeIndexed || q.From.IsZero() || q.AfterID > 0 {
		return q, true, nil
	}
	var first sql.Null[uint64]
	if err := sp.firstID(db.WithContext(ctx), q).Row().Scan(&first); err != nil {
		return q, false, fmt.Errorf("list %s: first id from %s: %w", sp.name, q.From.UTC().Format(time.RFC3339), err)
	}
	if !first.Valid {
		return q, false, nil
	}
	q.AfterID = first.V - 1
	return q, true, nil
}

// firstID selects the smallest id in q's time range.
func (sp listSpec) firstID(tx *gorm.DB, q ListQuery) *gorm.DB {
	return sp.during(tx.Table(sp.name).Select("MIN(id)"), q)
}

// each streams the rows of a list through fn, one at a time, without
// holding the result in memory.
func each[R any, T any](ctx context.Context, db *gorm.DB, sp listSpec, q ListQuery, conv func(R) T, fn func(T) error) error {
	q, ok, err := sp.startAtFrom(ctx, db, q)
	if err != nil || !ok {
		return err
	}
	var zero R
	tx, err := sp.scope(db.WithContext(ctx).Model(&zero), q)
	if err != nil {
		return err
	}
	rows, err := tx.Rows()
	if err != nil {
		return fmt.Errorf("list %s: %w", sp.name, err)
	}
	defer rows.Close()
	for rows.Next() {
		var r R
		if err := db.ScanRows(rows, &r); err != nil {
			return fmt.Errorf("list %s: scan: %w", sp.name, err)
		}
		if err := fn(conv(r)); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("list %s: %w", sp.name, err)
	}
	return nil
}

// dayPage is how many rows eachByPage reads per statement.
var dayPage = 1000

// eachByPage is each in pages of dayPage rows by id, each page its own
// statement: reconciliation reads a whole business day, and one statement
// for it would run into the server's statement timeout on a big day.
func eachByPage[R any, T any](ctx context.Context, db *gorm.DB, sp listSpec, q ListQuery, conv func(R) T,
	idOf func(T) uint64, fn func(T) error) error {
	q.Limit = dayPage
	for {
		n := 0
		err := each(ctx, db, sp, q, conv, func(t T) error {
			n++
			q.AfterID = idOf(t) // each has its own copy of q
			return fn(t)
		})
		if err != nil || n < dayPage {
			return err
		}
	}
}

// PaymentListItem is a payment in a list, with its row id for the cursor.
type PaymentListItem struct {
	ID uint64 `json:"id"`
	Payment
}

// EachPayment streams the payments matching q.
func (s *Store) EachPayment(ctx context.Context, q ListQuery, fn func(PaymentListItem) error) error {
	return each(ctx, s.db, paymentsSpec, q, func(r paymentRow) PaymentListItem {
		return PaymentListItem{ID: r.ID, Payment: *r.payment()}
	}, fn)
}

// NoticeListItem is a stored notification in a list: the decrypted
// resource as it was recorded.
type NoticeListItem struct {
	ID uint64 `json:"id"`
	Notice
}

// EachNotice streams the notifications matching q. A filter no index
// serves, given with neither out_trade_no nor From, returns an
// *UnindexedFilterError: source, or a transaction_id or out_refund_no
// that narrowNotices cannot place in an order.
func (s *Store) EachNotice(ctx context.Context, q ListQuery, fn func(NoticeListItem) error) error {
	q, err := s.narrowNotices(ctx, q)
	if err != nil {
		return err
	}
	if err := noticesBounded(q); err != nil {
		return err
	}
	return each(ctx, s.db, noticesSpec, q, func(r notificationRow) NoticeListItem {
		return NoticeListItem{ID: r.ID, Notice: r.notice()}
	}, fn)
}

// narrowNotices adds the order to a notification lookup by transaction or
// refund, so that the notifications' out_trade_no index serves it: a
// WeChat transaction and a refund each belong to one order, which the
// payments and refunds tables give through an index. Indexing the
// notifications by those columns instead would cost every notification
// insert on the payment path. When nothing in the ledger places the key
// in an order, the lookup stays as asked (noticesBounded then wants From).
func (s *Store) narrowNotices(ctx context.Context, q ListQuery) (ListQuery, error) {
	if q.OutTradeNo != "" {
		return q, nil
	}
	for _, l := range orderLookups(q) {
		var orders []string
		err := l.read(s.db.WithContext(ctx)).Pluck("out_trade_no", &orders).Error
		if err != nil {
			return q, fmt.Errorf("list notifications: order from %s: %w", l.table, err)
		}
		if len(orders) == 1 {
			q.OutTradeNo = orders[0]
			return q, nil
		}
	}
	return q, nil
}

// orderLookup is one indexed read that may give the order of a key.
type orderLookup struct {
	table, where string
	args         []any
}

func (l orderLookup) read(tx *gorm.DB) *gorm.DB {
	return tx.Table(l.table).Where(l.where, l.args...).Limit(1)
}

// orderLookups lists, in order, where the ledger may hold the order of
// q's transaction or refund: the payment (unique transaction_id); a
// refund of it (idx_refunds_transaction_id; a refund takes the transaction
// WeChat Pay states when its payment row has none); a second payment of
// the order (its DUPLICATE_PAYMENT flag, ref the transaction, written with
// its notice); the refund (unique out_refund_no); and, for a refund the
// gateway never made, its UNKNOWN_REFUND flag, written with its notice
// (unique kind and ref "<out_refund_no>:<state>").
func orderLookups(q ListQuery) []orderLookup {
	var out []orderLookup
	if tx := q.TransactionID; tx != "" {
		out = append(out, orderLookup{"payments", "transaction_id = ?", []any{tx}},
			orderLookup{"refunds", "transaction_id = ?", []any{tx}},
			orderLookup{"anomalies", "kind = ? AND ref = ? AND out_trade_no <> ''", []any{AnomalyDuplicatePayment, tx}})
	}
	if no := q.OutRefundNo; no != "" {
		refs := make([]string, len(RefundStates))
		for i, st := range RefundStates {
			refs[i] = no + ":" + st
		}
		out = append(out, orderLookup{"refunds", "out_refund_no = ?", []any{no}},
			orderLookup{"anomalies", "kind = ? AND ref IN ? AND out_trade_no <> ''", []any{AnomalyUnknownRefund, refs}})
	}
	return out
}

// noticesBounded refuses a notification query no index bounds. Without
// an order or a From, a filter on source, or on a transaction or refund
// nothing places in an order, is read in id order through the whole
// table when few rows or none match: past the API timeout on a big one.
// From bounds it: the read starts at the first id received at or after
// it (see startAtFrom). The other queries (to, or no filter) match the
// oldest rows, so their read stops after a page's worth (unless to is
// before every row).
func noticesBounded(q ListQuery) error {
	if q.OutTradeNo != "" || !q.From.IsZero() {
		return nil
	}
	unplaced := []string{"out_trade_no", "from"}
	switch {
	case q.TransactionID != "":
		return &UnindexedFilterError{List: "notifications", Filter: "transaction_id", Unplaced: true, Need: unplaced}
	case q.OutRefundNo != "":
		return &UnindexedFilterError{List: "notifications", Filter: "out_refund_no", Unplaced: true, Need: unplaced}
	case q.Source != "":
		return &UnindexedFilterError{List: "notifications", Filter: "source",
			Need: []string{"out_trade_no", "transaction_id", "out_refund_no", "from"}}
	}
	return nil
}

// RefundListItem is a refund as the finance API shows it. The refunds
// table belongs to the refund flow; this is a read model of it.
type RefundListItem struct {
	ID            uint64     `json:"id"`
	OutRefundNo   string     `json:"out_refund_no"`
	OutTradeNo    string     `json:"out_trade_no"`
	TransactionID string     `json:"transaction_id,omitempty"`
	RefundID      string     `json:"refund_id,omitempty"`
	State         string     `json:"state"`
	Amount        int64      `json:"amount"`
	Total         int64      `json:"total"`
	Reason        string     `json:"reason,omitempty"`
	Requester     string     `json:"requester"`
	Attempts      int        `json:"attempts"`
	LastError     string     `json:"last_error,omitempty"`
	SuccessTime   *time.Time `json:"success_time,omitempty"`
	AcceptedAt    *time.Time `json:"accepted_at,omitempty"`
	CreatedAt     time.Time  `json:"created_at"`
	UpdatedAt     time.Time  `json:"updated_at"`
}

func (r refundRow) item() RefundListItem {
	return RefundListItem{ID: r.ID, OutRefundNo: r.OutRefundNo, OutTradeNo: r.OutTradeNo,
		TransactionID: deref(r.TransactionID), RefundID: deref(r.RefundID), State: r.State, Amount: r.Amount,
		Total: r.Total, Reason: r.Reason, Requester: r.Requester, Attempts: r.Attempts, LastError: r.LastError,
		SuccessTime: utcPtr(r.SuccessTime), AcceptedAt: utcPtr(r.AcceptedAt), CreatedAt: r.CreatedAt.UTC(),
		UpdatedAt: r.UpdatedAt.UTC()}
}

// EachRefund streams the refunds matching q.
func (s *Store) EachRefund(ctx context.Context, q ListQuery, fn func(RefundListItem) error) error {
	return each(ctx, s.db, refundsSpec, q, refundRow.item, fn)
}

// OutboxJobListItem is a downstream job as the finance API shows it (a
// read model of the outbox table).
type OutboxJobListItem struct {
	ID          uint64     `json:"id"`
	Kind        string     `json:"kind"`
	JobKey      string     `json:"job_key"`
	OutTradeNo  string     `json:"out_trade_no"`
	OutRefundNo string     `json:"out_refund_no,omitempty"`
	Payload     string     `json:"payload"`
	State       string     `json:"state"`
	Attempts    int        `json:"attempts"`
	LastError   string     `json:"last_error,omitempty"`
	NextRunAt   time.Time  `json:"next_run_at"`
	DoneAt      *time.Time `json:"done_at,omitempty"`
	CreatedAt   time.Time  `json:"created_at"`
	UpdatedAt   time.Time  `json:"updated_at"`
}

func (r outboxJobRow) item() OutboxJobListItem {
	return OutboxJobListItem{ID: r.ID, Kind: r.Kind, JobKey: r.JobKey, OutTradeNo: r.OutTradeNo,
		OutRefundNo: deref(r.OutRefundNo), Payload: r.Payload, State: r.State, Attempts: r.Attempts,
		LastError: r.LastError, NextRunAt: r.NextRunAt.UTC(), DoneAt: utcPtr(r.DoneAt),
		CreatedAt: r.CreatedAt.UTC(), UpdatedAt: r.UpdatedAt.UTC()}
}

// EachOutboxJob streams the outbox jobs matching q.
func (s *Store) EachOutboxJob(ctx context.Context, q ListQuery, fn func(OutboxJobListItem) error) error {
	return each(ctx, s.db, outboxSpec, q, outboxJobRow.item, fn)
}

// Refund states as the refund flow writes them; a refund that is neither
// CLOSED nor FAILED may still move money.
var RefundStates = []string{"CREATED", "PROCESSING", "UNKNOWN", "SUCCESS", "CLOSED", "ABNORMAL", "FAILED"}

// OutboxStates are the states of an outbox job.
var OutboxStates = []string{"PENDING", "RUNNING", "DONE", "DEAD"}

// PaymentStates are the states of a payment.
var PaymentStates = []string{string(PaymentExpected), string(PaymentSuccess), string(PaymentClosed)}
