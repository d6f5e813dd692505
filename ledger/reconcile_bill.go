package ledger

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Bill is a parsed WeChat Pay trade bill (bill_type ALL) of one day.
type Bill struct {
	Payments []BillPayment
	Refunds  []BillRefund
	// NoStatement: WeChat Pay answered it has no bill of the day.
	NoStatement bool
	// TakeOver, when set, is when the gateway began taking this merchant's
	// payments. A bill payment from before it that the ledger does not
	// know at all was taken by the system that ran before, which fulfilled
	// it: it is reported (DEFERRED), not repaired, as repairing it would
	// confirm its stock a second time.
	TakeOver time.Time
	// AppID, when set, is this gateway's app. A merchant number can serve
	// several apps, and its bill lists them all: rows of another app are
	// another system's payments and refunds. They are left out (logged),
	// never repaired: repairing one would record, and confirm stock for,
	// an order that is not this gateway's.
	AppID string
	// Confirm, when set, asks WeChat Pay about a bill payment before it is
	// repaired: the bill is plain text in which the merchant's product
	// names and attach are not escaped, so a crafted one could add a row.
	// nil: its signed answer says the order was paid with this transaction
	// and amount, at the row's time (its success_time within
	// BillTimeSlack: the row's time decides the take-over and is recorded),
	// and refunded whether it has been refunded since (its
	// trade_state is REFUND: outside the gateway, which never recorded the
	// payment; the repair then holds the stock confirmation for a person,
	// see REFUNDED_OUTSIDE); ErrBillUnconfirmed (wrapped): it says otherwise,
	// and the repair is refused; any other error fails the run (retried).
	Confirm func(ctx context.Context, bp BillPayment) (refunded bool, err error)
}

// ErrBillUnconfirmed: WeChat Pay's own answer about an order does not
// confirm the bill's row for it.
var ErrBillUnconfirmed = errors.New("WeChat Pay's order query does not confirm the bill row")

// BillTimeSlack is how far a row's 交易时间 may be from WeChat Pay's
// success_time for Confirm to confirm it. Both are whole seconds of one
// moment, so they agree; a second allows for rounding, no more, as a row
// moved in time could move a payment past the take-over.
const BillTimeSlack = time.Second

// leaveOutOtherApps drops the rows of apps other than b.AppID and returns
// how many it dropped.
func (b *Bill) leaveOutOtherApps() int {
	if b.AppID == "" {
		return 0
	}
	payments, refunds := b.Payments[:0], b.Refunds[:0]
	for _, p := range b.Payments {
		if p.AppID == "" || p.AppID == b.AppID {
			payments = append(payments, p)
		}
	}
	for _, r := range b.Refunds {
		if r.AppID == "" || r.AppID == b.AppID {
			refunds = append(refunds, r)
		}
	}
	dropped := len(b.Payments) - len(payments) + len(b.Refunds) - len(refunds)
	b.Payments, b.Refunds = payments, refunds
	return dropped
}

// BillPayment is a payment row (交易状态 SUCCESS). Money is in fen.
type BillPayment struct {
	Time          time.Time
	AppID, MchID  string
	TransactionID string
	OutTradeNo    string
	OpenID        string
	Amount        int64  // 订单金额: the order total (amount.total)
	Currency      string // 货币种类: CNY for a domestic merchant
	Line          string
}

// BillRefund is a refund row (交易状态 REFUND). Money is in fen.
type BillRefund struct {
	Time          time.Time
	AppID         string
	TransactionID string
	OutTradeNo    string
	RefundID      string
	OutRefundNo   string
	Status        string // 退款状态: SUCCESS, PROCESSING, ABNORMAL, …
	Amount        int64  // 申请退款金额: the refund asked for (amount.refund)
	Line          string
}

// Bounds of the bill fields reconciliation keeps, in bytes: WeChat Pay's
// ids are ASCII, so its lengths in characters are bytes. out_trade_no and
// transaction_id are string[1,32] at WeChat Pay (the report's columns are
// 64 wide, but no longer one is WeChat's), out_refund_no string[1,64];
// appid and mchid, which a repair records, string[1,32], openid
// string[1,128]. A refund status is a word (SUCCESS, PROCESSING, …) and
// the report's bill_state is 16 wide. maxBillLine is a MySQL TEXT: the
// report's bill_line and a repair's notice plaintext.
const (
	maxBillID     = 32
	maxBillRefund = 64
	maxBillOpenID = 128
	maxBillState  = 16
	maxBillLine   = 65535
)

// bounded is a bill field and the lengths WeChat Pay's can have.
type bounded struct {
	name, value string
	min, max    int
}

// outOfBounds says which field no WeChat Pay row could hold, or "". A row
// whose product name added a line can hold anything (see Bill.Confirm).
func outOfBounds(fields ...bounded) string {
	for _, f := range fields {
		if n := len(f.value); n < f.min || n > f.max {
			return fmt.Sprintf("%s is %d bytes, a WeChat Pay row's is %d to %d", f.name, n, f.min, f.max)
		}
		if !utf8.ValidString(f.value) {
			return f.name + " is not UTF-8"
		}
	}
	return ""
}

// fault says why bp cannot be a row of WeChat Pay's, or "". The keys are
// what it is looked up and repaired by; appid, mchid and openid are
// recorded by its repair.
func (bp BillPayment) fault() string {
	return outOfBounds(bounded{"out_trade_no", bp.OutTradeNo, 1, maxBillID},
		bounded{"transaction_id", bp.TransactionID, 1, maxBillID}, bounded{"appid", bp.AppID, 0, maxBillID},
		bounded{"mchid", bp.MchID, 0, maxBillID}, bounded{"openid", bp.OpenID, 0, maxBillOpenID},
		bounded{"line", bp.Line, 0, maxBillLine})
}

// fault says why br cannot be a row of WeChat Pay's, or "".
func (br BillRefund) fault() string {
	return outOfBounds(bounded{"out_refund_no", br.OutRefundNo, 1, maxBillRefund},
		bounded{"out_trade_no", br.OutTradeNo, 0, maxBillID}, bounded{"transaction_id", br.TransactionID, 0, maxBillID},
		bounded{"refund status", br.Status, 0, maxBillState}, bounded{"line", br.Line, 0, maxBillLine})
}

// billColumns are the columns reconciliation reads, by their header name.
// The bill gives settlement amounts (应结订单金额, 退款金额: net of
// non-cash coupons) and the amounts the ledger keeps (订单金额 is
// amount.total, 申请退款金额 is amount.refund); the latter are compared, so
// a coupon order's refund does not show as a mismatch.
var billColumns = []string{"交易时间", "公众账号ID", "商户号", "微信订单号", "商户订单号", "用户标识", "交易状态",
	"微信退款单号", "商户退款单号", "申请退款金额", "退款状态", "订单金额", "货币种类"}

// billSummaryHeader is the header line of a bill's summary section: plain
// column names from 总交易单数 on, no backtick. Only a whole such line is
// the summary: a product name may hold "总交易单数" after a line break.
var billSummaryHeader = regexp.MustCompile("^总交易单数,[^`]*$")

// billRecordStart is how a data line starts: its 交易时间.
var billRecordStart = regexp.MustCompile("^`\\d{4}-\\d{2}-\\d{2} \\d{2}:\\d{2}:\\d{2},")

// ParseTradeBill parses a trade bill: a header line (plain, comma
// separated), one line per transaction with every field prefixed by a
// backtick, amounts in yuan, then a summary section with its own header,
// which is skipped. Empty input is a day without transactions. A line
// that cannot be read fails the whole bill: guessing at money is worse
// than a run retried.
func ParseTradeBill(data []byte) (*Bill, error) {
	bill := &Bill{}
	lines := strings.Split(strings.TrimPrefix(string(data), "\uFEFF"), "\n")
	var layout *billLayout
	for n := 0; n < len(lines); n++ {
		line := strings.TrimRight(lines[n], "\r")
		if strings.TrimSpace(line) == "" {
			continue
		}
		if layout == nil {
			var err error
			if layout, err = billHeader(line); err != nil {
				return nil, err
			}
			continue
		}
		if billSummaryHeader.MatchString(line) {
			break
		}
		first := n
		line, n = layout.joinBroken(lines, line, n)
		if err := bill.addLine(line, layout); err != nil {
			return nil, fmt.Errorf("trade bill line %d: %w", first+1, err)
		}
	}
	if layout == nil && len(strings.TrimSpace(string(data))) > 0 {
		return nil, fmt.Errorf("trade bill: no header")
	}
	return bill, nil
}

// billFreeText are the columns whose text the merchant or the payer chose
// (product name, attach): they may hold ",`" or a line break.
var billFreeText = []string{"商品名称", "商户数据包"}

// billLayout is where each column of a bill's data lines is.
type billLayout struct {
	col map[string]int
	n   int // fields per line
	// freeFrom..freeTo are the free-text columns, when they are next to
	// each other and hold no column reconciliation reads; else -1.
	freeFrom, freeTo int
}

func billHeader(line string) (*billLayout, error) {
	names := strings.Split(line, ",")
	l := &billLayout{col: map[string]int{}, n: len(names), freeFrom: -1, freeTo: -1}
	for i, name := range names {
		l.col[strings.TrimSpace(name)] = i
	}
	for _, name := range billColumns {
		if _, ok := l.col[name]; !ok {
			return nil, fmt.Errorf("trade bill header: no column %s", name)
		}
	}
	l.findFreeText()
	return l, nil
}

// findFreeText sets freeFrom..freeTo if the free-text columns are present,
// side by side, with no column that is read among them.
func (l *billLayout) findFreeText() {
	from, to := l.n, -1
	for _, name := range billFreeText {
		i, ok := l.col[name]
		if !ok {
			return
		}
		from, to = min(from, i), max(to, i)
	}
	if to-from+1 != len(billFreeText) {
		return
	}
	for _, name := range billColumns {
		if i := l.col[name]; i >= from && i <= to {
			return
		}
	}
	l.freeFrom, l.freeTo = from, to
}

// joinBroken joins to line (lines[n]) the lines that continue it: a line
// break inside a free-text field splits a record. A record short of the
// header's fields goes on until the next line is a record's start or the
// summary's header; the text after a break may start with anything, a
// backtick or 总交易单数 included. It returns the record and the index of
// its last line.
func (l *billLayout) joinBroken(lines []string, line string, n int) (string, int) {
	for l.freeFrom >= 0 && n+1 < len(lines) && fieldCount(line) < l.n {
		next := strings.TrimRight(lines[n+1], "\r")
		if l.startsRecord(next) || billSummaryHeader.MatchString(next) {
			break
		}
		line, n = line+"\n"+next, n+1
	}
	return line, n
}

// startsRecord reports whether line starts a data record: with its
// 交易时间 when that is the first column (as in WeChat Pay's bills), else
// with a backtick.
func (l *billLayout) startsRecord(line string) bool {
	if l.col["交易时间"] == 0 {
		return billRecordStart.MatchString(line)
	}
	return strings.HasPrefix(line, "`")
}

func fieldCount(line string) int { return strings.Count(line, ",`") + 1 }

// splitBillLine splits a data line into its fields. WeChat does not quote
// fields but starts each with a backtick, so a field may hold a comma
// (a product name "T-shirt, blue"): fields are separated by ",`", not ",".
func splitBillLine(line string) ([]string, error) {
	rest, ok := strings.CutPrefix(line, "`")
	if !ok {
		return nil, fmt.Errorf("fields must start with a backtick")
	}
	return strings.Split(rest, ",`"), nil
}

// fields checks a split line against the header. More fields than the
// header has means ",`" inside a free-text column; then the columns after
// those are counted from the end of the line.
func (l *billLayout) fields(raw []string) (func(name string) string, error) {
	if len(raw) < l.n || len(raw) > l.n && l.freeFrom < 0 {
		return nil, fmt.Errorf("%d fields, header has %d", len(raw), l.n)
	}
	return func(name string) string {
		i := l.col[name]
		if i > l.freeTo {
			i += len(raw) - l.n
		}
		return strings.TrimSpace(raw[i])
	}, nil
}

func (b *Bill) addLine(line string, l *billLayout) error {
	raw, err := splitBillLine(line)
	if err != nil {
		return err
	}
	f, err := l.fields(raw)
	if err != nil {
		return err
	}
	at, err := time.ParseInLocation(time.DateTime, f("交易时间"), BusinessDay)
	if err != nil {
		return fmt.Errorf("交易时间 %q: %w", f("交易时间"), err)
	}
	switch state := f("交易状态"); state {
	case "SUCCESS":
		amount, err := ParseYuan(f("订单金额"))
		if err != nil {
			return fmt.Errorf("订单金额: %w", err)
		}
		b.Payments = append(b.Payments, BillPayment{Time: at.UTC(), AppID: f("公众账号ID"), MchID: f("商户号"),
			TransactionID: f("微信订单号"), OutTradeNo: f("商户订单号"), OpenID: f("用户标识"), Amount: amount,
			Currency: f("货币种类"), Line: line})
	case "REFUND":
		amount, err := ParseYuan(f("申请退款金额"))
		if err != nil {
			return fmt.Errorf("申请退款金额: %w", err)
		}
		b.Refunds = append(b.Refunds, BillRefund{Time: at.UTC(), AppID: f("公众账号ID"), TransactionID: f("微信订单号"),
			OutTradeNo: f("商户订单号"), RefundID: f("微信退款单号"), OutRefundNo: f("商户退款单号"),
			Status: f("退款状态"), Amount: amount, Line: line})
	default:
		// Other states (REVOKED, NOTPAY, …) moved no money.
	}
	return nil
}

// ParseYuan converts a decimal yuan amount ("12.34", "-0.05", "7", "7.5")
// to fen exactly, without floating point.
func ParseYuan(s string) (int64, error) {
	neg := strings.HasPrefix(s, "-")
	whole, frac, _ := strings.Cut(strings.TrimPrefix(s, "-"), ".")
	if whole == "" || len(frac) > 2 || len(whole) > 13 || strings.ContainsAny(whole+frac, "+- ") {
		return 0, fmt.Errorf("amount %q: want yuan with at most two decimals", s)
	}
	frac += strings.Repeat("0", 2-len(frac))
	y, err1 := strconv.ParseUint(whole, 10, 63)
	f, err2 := strconv.ParseUint(frac, 10, 8)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("amount %q: want yuan with at most two decimals", s)
	}
	fen := int64(y)*100 + int64(f)
	if neg {
		fen = -fen
	}
	return fen, nil
}
