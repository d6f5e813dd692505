package gateway

import (
	"encoding/base64"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"paygateway/ledger"
)

// List limits: a page has 1..maxPageLimit rows, defaultPageLimit unless asked.
const (
	defaultPageLimit = 100
	maxPageLimit     = 1000
)

// keyPattern accepts the identifiers finance filters on (out_trade_no,
// transaction_id, out_refund_no, openid, job kinds): WeChat Pay's
// alphabet plus '.', ':' and '@'. Anything else is refused with 400
// before a query is built; values are bound as parameters regardless.
var keyPattern = regexp.MustCompile(`^[A-Za-z0-9_\-|*@.:]{1,64}$`)

// earliest and latest bound time filters to years the ledger can hold.
var (
	earliest = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
	latest   = time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC)
)

// listFilters names the query parameters of a list and the states its
// state filter accepts.
type listFilters struct {
	keys   []string // identifier filters: out_trade_no, transaction_id, …
	states []string
	source bool
	kind   bool
}

// listRequest is a parsed list query.
type listRequest struct {
	query ledger.ListQuery
	limit int
	csv   bool
}

func invalid(msg string) error { return &Error{Code: CodeInvalid, Message: msg} }

// unindexedMessage tells a client which filter to add to a list query the
// ledger refused as unindexed (it names filters, never the values sent).
func unindexedMessage(e *ledger.UnindexedFilterError) string {
	need := e.Need[len(e.Need)-1]
	if n := len(e.Need); n > 1 {
		need = strings.Join(e.Need[:n-1], ", ") + " or " + need
	}
	if e.Unplaced {
		return "the ledger has no payment or refund with this " + e.Filter + ", and the " + e.List +
			" have no index on it: give it with " + need
	}
	return "the " + e.List + " have no index on " + e.Filter + ": give it with " + need
}

// parseList validates every query parameter strictly: unknown or repeated
// parameters, unknown states, malformed times or identifiers, and absurd
// limits are refused with EINVALID.
func parseList(c *gin.Context, f listFilters) (listRequest, error) {
	req := listRequest{limit: defaultPageLimit, csv: wantsCSV(c)}
	for name, vals := range c.Request.URL.Query() {
		if len(vals) != 1 {
			return req, invalid("parameter " + name + " given more than once")
		}
		if err := req.set(f, name, vals[0]); err != nil {
			return req, err
		}
	}
	q := req.query
	if !q.From.IsZero() && !q.To.IsZero() && !q.From.Before(q.To) {
		return req, invalid("from must be before to")
	}
	return req, nil
}

func (req *listRequest) set(f listFilters, name, v string) error {
	q := &req.query
	switch {
	case name == "format":
		if v != "json" && v != "csv" {
			return invalid("format must be json or csv")
		}
		req.csv = v == "csv"
	case name == "limit":
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxPageLimit {
			return invalid("limit must be an integer from 1 to " + strconv.Itoa(maxPageLimit))
		}
		req.limit = n
	case name == "cursor" && v == "": // the first page
	case name == "cursor":
		id, err := decodeCursor(v)
		if err != nil {
			return err
		}
		q.AfterID = id
	case name == "from" || name == "to":
		t, err := parseTime(name, v)
		if err != nil {
			return err
		}
		if name == "from" {
			q.From = t
		} else {
			q.To = t
		}
	case name == "state" && f.states != nil:
		if !slices.Contains(f.states, v) {
			return invalid("state must be one of " + strings.Join(f.states, ", "))
		}
		q.State = v
	case name == "source" && f.source:
		if !slices.Contains(noticeSources, v) {
			return invalid("source must be one of " + strings.Join(noticeSources, ", "))
		}
		q.Source = v
	case name == "kind" && f.kind, slices.Contains(f.keys, name):
		if !keyPattern.MatchString(v) {
			return invalid(name + " must be 1-64 of A-Z a-z 0-9 _ - | * @ . :")
		}
		setKey(q, name, v)
	default:
		return invalid("unknown parameter " + strconv.Quote(name))
	}
	return nil
}

var noticeSources = []string{ledger.SourceCallback, ledger.SourceQuery, ledger.SourceReconcile, ledger.SourceAPI, ledger.SourceJanitor}

func setKey(q *ledger.ListQuery, name, v string) {
	switch name {
	case "out_trade_no":
		q.OutTradeNo = v
	case "transaction_id":
		q.TransactionID = v
	case "out_refund_no":
		q.OutRefundNo = v
	case "payer_openid":
		q.PayerOpenID = v
	case "kind":
		q.Kind = v
	case "principal":
		q.Principal = v
	}
}

func parseTime(name, v string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339Nano, plusOffset(v))
	if err != nil || t.Before(earliest) || !t.Before(latest) {
		return time.Time{}, invalid(name + " must be an RFC 3339 time between 2000 and 2100")
	}
	return t.UTC(), nil
}

// plusOffset restores the + of a positive offset sent unencoded in a
// query ("…T00:00:00+08:00" reads as "…T00:00:00 08:00"): RFC 3339 has no
// space, so the one before a final hh:mm can only have been that +.
func plusOffset(v string) string {
	if n := len(v); n > 6 && v[n-6] == ' ' && v[n-3] == ':' && strings.Count(v, " ") == 1 {
		return v[:n-6] + "+" + v[n-5:]
	}
	return v
}

// Cursors are opaque to clients: base64url of "v1:<last id>".
func encodeCursor(id uint64) string {
	return base64.RawURLEncoding.EncodeToString([]byte("v1:" + strconv.FormatUint(id, 10)))
}

func decodeCursor(s string) (uint64, error) {
	raw, err := base64.RawURLEncoding.DecodeString(s)
	rest, ok := strings.CutPrefix(string(raw), "v1:")
	id, perr := strconv.ParseUint(rest, 10, 63)
	if err != nil || !ok || perr != nil || id == 0 {
		return 0, invalid("malformed cursor")
	}
	return id, nil
}

func wantsCSV(c *gin.Context) bool {
	return strings.Contains(c.GetHeader("Accept"), "text/csv")
}

// firstDay is the first business day the finance API takes (days compare
// as text: they are fixed-width).
const firstDay = "2000-01-01"

// parseDay reads a business day "YYYY-MM-DD" (UTC+8) between 2000-01-01
// and today.
func parseDay(v string, now time.Time) (string, error) {
	start, err := ledger.DayStart(v)
	if err != nil || len(v) != len(time.DateOnly) || ledger.DayOf(start) < firstDay || ledger.DayOf(start) > ledger.DayOf(now) {
		return "", invalid("date must be a day YYYY-MM-DD (UTC+8) from 2000-01-01 to today")
	}
	return ledger.DayOf(start), nil
}

// parsePastDay reads a business day whose trade bill can exist: before
// today (UTC+8). WeChat Pay publishes a day's bill the next morning, so
// today's would be empty or incomplete.
func parsePastDay(v string, now time.Time) (string, error) {
	start, err := ledger.DayStart(v)
	if err != nil || len(v) != len(time.DateOnly) || ledger.DayOf(start) < firstDay {
		return "", invalid("date must be a day YYYY-MM-DD (UTC+8) from 2000-01-01 to yesterday")
	}
	if day := ledger.DayOf(start); day < ledger.DayOf(now) {
		return day, nil
	}
	return "", &Error{Code: CodeDayNotOver, Message: "date must be before today (UTC+8): " +
		"WeChat Pay publishes a day's trade bill the next day"}
}
