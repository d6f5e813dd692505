package ledger

import (
	"fmt"
	"strconv"
	"strings"
	"time"
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
}

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
	Amount        int64 // 订单金额: the order total (amount.total)
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

// billColumns are the columns reconciliation reads, by their header name.
// The bill gives settlement amounts (应结订单金额, 退款金额: net of
// non-cash coupons) and the amounts the ledger keeps (订单金额 is
// amount.total, 申请退款金额 is amount.refund); the latter are compared, so
// a coupon order's refund does not show as a mismatch.
var billColumns = []string{"交易时间", "公众账号ID", "商户号", "微信订单号", "商户订单号", "用户标识", "交易状态",
	"微信退款单号", "商户退款单号", "申请退款金额", "退款状态", "订单金额"}

const billSummaryPrefix = "总交易单数"

// ParseTradeBill parses a trade bill: a header line (plain, comma
// separated), one line per transaction with every field prefixed by a
// backtick, amounts in yuan, then a summary section with its own header,
// which is skipped. Empty input is a day without transactions.
func ParseTradeBill(data []byte) (*Bill, error) {
	bill := &Bill{}
	lines := strings.Split(strings.TrimPrefix(string(data), "\uFEFF"), "\n")
	var col map[string]int
	for n, line := range lines {
		line = strings.TrimRight(line, "\r")
		if strings.TrimSpace(line) == "" {
			continue
		}
		if col == nil {
			var err error
			if col, err = billHeader(line); err != nil {
				return nil, err
			}
			continue
		}
		if strings.HasPrefix(line, billSummaryPrefix) {
			break
		}
		if err := bill.addLine(line, col); err != nil {
			return nil, fmt.Errorf("trade bill line %d: %w", n+1, err)
		}
	}
	if col == nil && len(strings.TrimSpace(string(data))) > 0 {
		return nil, fmt.Errorf("trade bill: no header")
	}
	return bill, nil
}

func billHeader(line string) (map[string]int, error) {
	col := map[string]int{}
	for i, name := range strings.Split(line, ",") {
		col[strings.TrimSpace(name)] = i
	}
	for _, name := range billColumns {
		if _, ok := col[name]; !ok {
			return nil, fmt.Errorf("trade bill header: no column %s", name)
		}
	}
	col[""] = len(strings.Split(line, ","))
	return col, nil
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

func (b *Bill) addLine(line string, col map[string]int) error {
	raw, err := splitBillLine(line)
	if err != nil {
		return err
	}
	if len(raw) != col[""] {
		return fmt.Errorf("%d fields, header has %d", len(raw), col[""])
	}
	f := func(name string) string { return strings.TrimSpace(raw[col[name]]) }
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
			TransactionID: f("微信订单号"), OutTradeNo: f("商户订单号"), OpenID: f("用户标识"), Amount: amount, Line: line})
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
