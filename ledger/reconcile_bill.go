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
	// and what it adds (see Confirmed); ErrBillUnconfirmed (wrapped): it
	// says otherwise, and the repair is refused; any other error fails the
	// run (retried).
	Confirm func(ctx context.Context, bp BillPayment) (Confirmed, error)
}

// Confirmed is what WeChat Pay's order query adds to a bill row it
// confirmed, for its repair.
type Confirmed struct {
	// Refunded: it has been refunded since (trade_state REFUND: outside
	// the gateway, which never recorded the payment; the repair then
	// holds the stock confirmation for a person, see REFUNDED_OUTSIDE).
	Refunded bool
	// PayerTotal is what the payer paid (amount.payer_total): less than
	// the order total by the coupons WeChat Pay applied, which the bill's
	// 订单金额 includes.
	PayerTotal int64
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

// billOutTradeNo is an out_trade_no WeChat Pay issues: 6 to 32 of
// A-Z a-z 0-9 _ - | * (the orders API takes no other). Its order query
// refuses any other (400 PARAM_ERROR, signed), which fails the run: a
// crafted row naming one would fail every run of its day, and leave the
// payments after it in the bill unrepaired.
var billOutTradeNo = regexp.MustCompile(`^[A-Za-z0-9_\-|*]{6,32}$`)

// fault says why bp cannot be a row of WeChat Pay's, or "". The keys are
// what it is looked up and repaired by; appid, mchid and openid are
// recorded by its repair.
func (bp BillPayment) fault() string {
	why := outOfBounds(bounded{"out_trade_no", bp.OutTradeNo, 1, maxBillID},
		bounded{"transaction_id", bp.TransactionID, 1, maxBillID}, bounded{"appid", bp.AppID, 0, maxBillID},
		bounded{"mchid", bp.MchID, 0, maxBillID}, bounded{"openid", bp.OpenID, 0, maxBillOpenID},
		bounded{"line", bp.Line, 0, maxBillLine})
	if why == "" && !billOutTradeNo.MatchString(bp.OutTradeNo) {
		why = "out_trade_no is not 6 to 32 of A-Z a-z 0-9 _ - | *, as WeChat Pay's are"
	}
	return why
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
// column names from 总交易单数 on, no backtick. A product name may hold
// such a line after a line break, but the record it is in goes on after
// it: the summary's header is the last such line of the bill.
var billSummaryHeader = regexp.MustCompile("^总交易单数,[^`]*$")

// billTradeStates are WeChat Pay's trade states: a row's 交易状态 is one.
var billTradeStates = map[string]bool{"SUCCESS": true, "REFUND": true, "REVOKED": true, "NOTPAY": true,
	"CLOSED": true, "USERPAYING": true, "PAYERROR": true}

// billCurrency is how a 货币种类 reads: an ISO 4217 code.
var billCurrency = regexp.MustCompile("^[A-Z]{3}$")

// ParseTradeBill parses a trade bill: a header line (plain, comma
// separated), one record per transaction with every field prefixed by a
// backtick, amounts in yuan, then a summary section with its own header,
// which is skipped. Empty input is a day without transactions.
//
// The free-text columns are not escaped (see billFreeText), so a record
// goes on over the lines after it up to the next line that starts one
// (see startFault), whatever they look like. Its columns after the free
// text are read from its end, and every column read is checked (see
// checkColumn). A record that cannot
// be read fails the whole bill, and so does one whose lines could end in
// two places (see wholeBefore): guessing at money is worse than a day a
// person must look at. Its errors match ErrBillUnreadable.
func ParseTradeBill(data []byte) (*Bill, error) {
	bill, err := parseTradeBill(data)
	if err != nil {
		return bill, fmt.Errorf("%w: %w", ErrBillUnreadable, err)
	}
	return bill, nil
}

func parseTradeBill(data []byte) (*Bill, error) {
	lines := strings.Split(strings.TrimPrefix(string(data), "\uFEFF"), "\n")
	for i := range lines {
		lines[i] = strings.TrimRight(lines[i], "\r")
	}
	bill := &Bill{}
	h := nextLine(lines, 0)
	if h < 0 {
		return bill, nil
	}
	layout, err := billHeader(lines[h])
	if err != nil {
		return nil, err
	}
	end := summaryStart(lines)
	first := nextLine(lines[:end], h+1)
	if first < 0 {
		return bill, nil
	}
	if err := layout.checkSummary(lines[end:], end); err != nil {
		return nil, err
	}
	return bill, bill.addRecords(lines[:end], first, layout)
}

// addRecords adds the records of lines from lines[n] on.
func (b *Bill) addRecords(lines []string, n int, l *billLayout) error {
	for n >= 0 {
		last, next := l.recordEnd(lines, n)
		if err := l.wholeBefore(lines, n, last); err != nil {
			return err
		}
		if err := b.addRecord(strings.Join(lines[n:last+1], "\n"), l); err != nil {
			return recordError(n, last, err)
		}
		n = next
	}
	return nil
}

func recordError(first, last int, err error) error {
	one := ""
	if last > first {
		one = " (one record)"
	}
	return fmt.Errorf("trade bill %s%s: %w", lineSpan(first, last), one, err)
}

// lineSpan names lines[first..last] for a person: "line 3", "lines 3-5".
func lineSpan(first, last int) string {
	if last > first {
		return fmt.Sprintf("lines %d-%d", first+1, last+1)
	}
	return fmt.Sprintf("line %d", first+1)
}

// nextLine is the index of the first line from lines[n] on that is not
// blank, or -1.
func nextLine(lines []string, n int) int {
	for ; n < len(lines); n++ {
		if strings.TrimSpace(lines[n]) != "" {
			return n
		}
	}
	return -1
}

// billFreeText are the columns whose text the merchant or the payer chose
// (product name, attach): they may hold ",`" or a line break.
var billFreeText = []string{"商品名称", "商户数据包"}

// billLayout is where each column of a bill's records is.
type billLayout struct {
	names []string
	col   map[string]int
	n     int // fields per record
	// freeFrom..freeTo are the free-text columns, when they are next to
	// each other, hold no column reconciliation reads and come after
	// 交易时间; else -1, and a record is one line of exactly n fields.
	freeFrom, freeTo int
}

func billHeader(line string) (*billLayout, error) {
	names := strings.Split(line, ",")
	l := &billLayout{names: names, col: map[string]int{}, n: len(names), freeFrom: -1, freeTo: -1}
	for i, name := range names {
		names[i] = strings.TrimSpace(name)
		l.col[names[i]] = i
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
// side by side, with no column that is read among them, after 交易时间
// (which tells where a record starts).
func (l *billLayout) findFreeText() {
	from, to := l.n, -1
	for _, name := range billFreeText {
		i, ok := l.col[name]
		if !ok {
			return
		}
		from, to = min(from, i), max(to, i)
	}
	if to-from+1 != len(billFreeText) || l.col["交易时间"] > from {
		return
	}
	for _, name := range billColumns {
		if i := l.col[name]; i >= from && i <= to {
			return
		}
	}
	l.freeFrom, l.freeTo = from, to
}

// summaryStart is the index of the summary section's header, or
// len(lines) when the bill has none.
func summaryStart(lines []string) int {
	for i := len(lines) - 1; i >= 0; i-- {
		if billSummaryHeader.MatchString(lines[i]) {
			return i
		}
	}
	return len(lines)
}

// checkSummary checks that no record follows the summary's header,
// summary[0] (line n of the bill): then a record's text held the header.
func (l *billLayout) checkSummary(summary []string, n int) error {
	for i, line := range summary {
		if l.startFault(line) == nil {
			return fmt.Errorf("trade bill line %d: a record after the summary's header (line %d)", n+i+1, n+1)
		}
	}
	return nil
}

// recordEnd finds where the record starting at lines[n] ends: before the
// next line that starts a record, blank lines left out. It returns the
// record's last line and the next record's first (-1: none).
func (l *billLayout) recordEnd(lines []string, n int) (last, next int) {
	last = n
	for i := nextLine(lines, n+1); i >= 0; i = nextLine(lines, i+1) {
		if l.freeFrom < 0 || l.startFault(lines[i]) == nil {
			return last, i
		}
		last = i
	}
	return last, -1
}

// startFault says why line does not start a record, or nil: a record's
// first line holds the columns before the free text, and those read are
// a record's (交易时间 a time, a trade state, a currency).
// Text after a line break in a free-text column rarely is one; one that
// is, like a record cut short before a whole one, fails the bill, as the
// record before it is short.
func (l *billLayout) startFault(line string) error {
	raw, err := splitBillLine(line)
	if err != nil {
		return err
	}
	if len(raw) < l.head() {
		return fmt.Errorf("%d fields, a record's first line has at least %d", len(raw), l.head())
	}
	return l.check(func(name string) string { return strings.TrimSpace(raw[l.col[name]]) }, 0, l.head())
}

// wholeBefore refuses a record of several lines (lines[n..last]) whose
// first lines already make a whole one: the line after them does not
// start a record, but joining it is a guess between free text that reads
// as a record's end and a record gone wrong, whose columns would be read
// from the wrong line.
func (l *billLayout) wholeBefore(lines []string, n, last int) error {
	fields := 1
	for m := n; m < last; m++ {
		fields += strings.Count(lines[m], ",`")
		if fields < l.n || !l.endsRecord(lines[m]) {
			continue
		}
		next := nextLine(lines, m+1)
		return fmt.Errorf("trade bill line %d: does not start a record (%w), but %s before it is a whole one",
			next+1, l.startFault(lines[next]), lineSpan(n, m))
	}
	return nil
}

// endsRecord reports whether line ends with the columns after the free
// text, reading as a record's.
func (l *billLayout) endsRecord(line string) bool {
	raw := strings.Split(line, ",`")
	if len(raw) <= l.n-1-l.freeTo {
		return false
	}
	f := func(name string) string { return strings.TrimSpace(raw[len(raw)-l.n+l.col[name]]) }
	return l.check(f, l.freeTo+1, l.n) == nil
}

// head is how many fields a record's first line has at least: those
// before the free text and the start of that; without free-text columns,
// all.
func (l *billLayout) head() int {
	if l.freeFrom < 0 {
		return l.n
	}
	return l.freeFrom + 1
}

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

// split splits a record into its fields: the header's, and more only when
// the free-text columns hold ",`"; a line break only in those.
func (l *billLayout) split(record string) ([]string, error) {
	raw, err := splitBillLine(record)
	if err != nil {
		return nil, err
	}
	if len(raw) < l.n || len(raw) > l.n && l.freeFrom < 0 {
		return nil, fmt.Errorf("%d fields, header has %d", len(raw), l.n)
	}
	extra := len(raw) - l.n
	for i, v := range raw {
		if !strings.Contains(v, "\n") || l.freeFrom >= 0 && i >= l.freeFrom && i <= l.freeTo+extra {
			continue
		}
		if l.freeFrom >= 0 && i > l.freeTo {
			i -= extra
		}
		return nil, fmt.Errorf("a line break in %s, which is not free text", l.names[i])
	}
	return raw, nil
}

// fields reads a split record by column name. The columns after the free
// text are counted from its end: a free text holding ",`" moves them.
func (l *billLayout) fields(raw []string) func(name string) string {
	return func(name string) string {
		i := l.col[name]
		if l.freeFrom >= 0 && i > l.freeTo {
			i += len(raw) - l.n
		}
		return strings.TrimSpace(raw[i])
	}
}

// check checks the columns read that are at from..to-1, so that a record
// joined wrong, or a line cut short, is refused rather than read.
func (l *billLayout) check(f func(name string) string, from, to int) error {
	for _, name := range billColumns {
		if i := l.col[name]; i < from || i >= to {
			continue
		}
		if err := l.checkColumn(name, f(name)); err != nil {
			return err
		}
	}
	return nil
}

func (l *billLayout) checkColumn(name, v string) error {
	switch name {
	case "交易时间":
		// Any day: a REFUND bill dates a refund by its payment, and
		// nothing promises that an ALL bill's rows are all of its day.
		if _, err := time.ParseInLocation(time.DateTime, v, BusinessDay); err != nil {
			return fmt.Errorf("交易时间 %.64q is not a time", v)
		}
	case "交易状态":
		if !billTradeStates[v] {
			return fmt.Errorf("交易状态 %.64q is not a trade state", v)
		}
	case "货币种类":
		if !billCurrency.MatchString(v) {
			return fmt.Errorf("货币种类 %.64q is not a currency", v)
		}
	case "订单金额", "申请退款金额":
		// Empty is let through: a row's state reads only one of them, and
		// an unused one WeChat Pay might leave blank must not refuse the
		// day's bill (the one read is parsed, empty refused, when used).
		if _, err := ParseYuan(v); err != nil && v != "" {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	return nil
}

// addRecord adds a payment (SUCCESS) or refund (REFUND) record; other
// states (REVOKED, NOTPAY, …) moved no money.
func (b *Bill) addRecord(record string, l *billLayout) error {
	raw, err := l.split(record)
	if err != nil {
		return err
	}
	f := l.fields(raw)
	if err := l.check(f, 0, l.n); err != nil {
		return err
	}
	at, _ := time.ParseInLocation(time.DateTime, f("交易时间"), BusinessDay) // checked
	switch f("交易状态") {
	case "SUCCESS":
		amount, err := ParseYuan(f("订单金额")) // checked, but may be blank
		if err != nil {
			return fmt.Errorf("订单金额 of a SUCCESS row: %w", err)
		}
		b.Payments = append(b.Payments, BillPayment{Time: at.UTC(), AppID: f("公众账号ID"), MchID: f("商户号"),
			TransactionID: f("微信订单号"), OutTradeNo: f("商户订单号"), OpenID: f("用户标识"), Amount: amount,
			Currency: f("货币种类"), Line: record})
	case "REFUND":
		amount, err := ParseYuan(f("申请退款金额")) // checked, but may be blank
		if err != nil {
			return fmt.Errorf("申请退款金额 of a REFUND row: %w", err)
		}
		b.Refunds = append(b.Refunds, BillRefund{Time: at.UTC(), AppID: f("公众账号ID"), TransactionID: f("微信订单号"),
			OutTradeNo: f("商户订单号"), RefundID: f("微信退款单号"), OutRefundNo: f("商户退款单号"),
			Status: f("退款状态"), Amount: amount, Line: record})
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
