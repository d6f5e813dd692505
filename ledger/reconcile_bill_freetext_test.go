package ledger_test

import (
	"strings"
	"testing"

	"paygateway/ledger"
)

// The free-text columns of a bill (商品名称, 商户数据包) are the merchant's
// and the payer's text, which WeChat Pay does not escape: after a line
// break it may look like a record's start or like the summary's header,
// and it may hold the field separator ",`" many times over.

const freeTextHeader = "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注"

const freeTextSummary = "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额\r\n" +
	"`3,`6.00,`0.00,`0.00,`0.03,`6.00,`0.00\r\n"

// paidRow is a SUCCESS record of out_trade_no no (transaction "42"+no) at
// 09:00 on 2024-05-01, of total yuan.
func paidRow(no, name, attach, total string) string {
	return "`2024-05-01 09:00:00,`wx1,`190,`0,`,`42" + no + ",`" + no + ",`o1,`JSAPI,`SUCCESS,`OTHERS,`CNY,`" + total +
		",`0.00,`0,`0,`0.00,`0.00,`,`,`" + name + ",`" + attach + ",`0.01,`0.60%,`" + total + ",`0.00,`"
}

// refundRow is a REFUND record of out_refund_no R+no, asking refund yuan.
func refundRow(no, name, attach, refund string) string {
	return "`2024-05-01 10:00:00,`wx1,`190,`0,`,`42" + no + ",`" + no + ",`o1,`JSAPI,`REFUND,`OTHERS,`CNY,`0.00,`0.00,`50" +
		no + ",`R" + no + ",`" + refund + ",`0.00,`ORIGINAL,`SUCCESS,`" + name + ",`" + attach + ",`-0.01,`0.60%,`0.00,`" + refund + ",`"
}

func freeTextBill(rows ...string) string {
	return freeTextHeader + "\r\n" + strings.Join(rows, "\r\n") + "\r\n" + freeTextSummary
}

// wantPaid parses bill and checks its payments: out_trade_no to fen, each
// with its transaction id and its whole record as its line.
func wantPaid(t *testing.T, bill string, want map[string]int64, lines map[string]string) *ledger.Bill {
	t.Helper()
	b, err := ledger.ParseTradeBill([]byte(bill))
	if err != nil {
		t.Fatalf("bill refused: %v", err)
	}
	if len(b.Payments) != len(want) {
		t.Fatalf("%d payments %+v, want %d", len(b.Payments), b.Payments, len(want))
	}
	for _, p := range b.Payments {
		amount, ok := want[p.OutTradeNo]
		if !ok || p.Amount != amount || p.TransactionID != "42"+p.OutTradeNo || p.Currency != "CNY" {
			t.Errorf("payment %+v, want %s of %d fen", p, p.OutTradeNo, amount)
		}
		if line, ok := lines[p.OutTradeNo]; ok && p.Line != line {
			t.Errorf("payment %s line %q, want %q", p.OutTradeNo, p.Line, line)
		}
	}
	return b
}

// TestParseTradeBillDatetimeAfterBreak: the reviewer's case. A product
// name whose text after a line break starts with a whole 交易时间 (and
// more of a record's start) is joined to its record; before, the record
// was left short and the bill refused ("22 fields, header has 27").
func TestParseTradeBillDatetimeAfterBreak(t *testing.T) {
	for label, name := range map[string]string{
		"the reviewer's":         "hi\n`2024-05-01 09:00:00,x",
		"CRLF, more fields":      "hi\r\n`2024-05-01 09:00:00,`wx1,`190,`0,`",
		"up to the free text":    "hi\n`2024-05-01 09:00:00,`wx1,`190,`0,`,`42T9,`T9,`o1,`JSAPI,`SUCCESS,`OTHERS,`CNY,`9.00",
		"a comma after the time": "hi\n`2024-05-01 10:00:00,",
	} {
		t.Run(label, func(t *testing.T) {
			bill := freeTextBill(paidRow("T1", "a", "", "1.00"), paidRow("T2", name, "att", "2.00"), paidRow("T3", "c", "", "3.00"))
			want := strings.ReplaceAll(paidRow("T2", name, "att", "2.00"), "\r\n", "\n")
			wantPaid(t, bill, map[string]int64{"T1": 100, "T2": 200, "T3": 300}, map[string]string{"T2": want})
		})
	}
}

// TestParseTradeBillSummaryLineInFreeText: the reviewer's second case. A
// whole line "总交易单数,…" inside the attach or the product name, of a
// record in the middle or the last one, is the record's text; the bill's
// summary is its last such line.
func TestParseTradeBillSummaryLineInFreeText(t *testing.T) {
	fake := "\n总交易单数,应结订单总金额,退款总金额\n"
	cases := map[string][]string{
		"attach, middle record": {paidRow("T1", "a", "", "1.00"), paidRow("T2", "b", "x"+fake+"y", "2.00"),
			paidRow("T3", "c", "", "3.00")},
		"attach, last record": {paidRow("T1", "a", "", "1.00"), paidRow("T3", "c", "", "3.00"),
			paidRow("T2", "b", "x"+fake+"y", "2.00")},
		"attach ends with it": {paidRow("T1", "a", "", "1.00"), paidRow("T2", "b", "x\n总交易单数,y\n", "2.00"),
			paidRow("T3", "c", "", "3.00")},
		"product name": {paidRow("T1", "a", "", "1.00"), paidRow("T2", "b"+fake+"`3,`6.00", "z", "2.00"),
			paidRow("T3", "c", "", "3.00")},
	}
	for name, rows := range cases {
		t.Run(name, func(t *testing.T) {
			wantPaid(t, freeTextBill(rows...), map[string]int64{"T1": 100, "T2": 200, "T3": 300}, nil)
		})
	}
}

// TestParseTradeBillRecordOfManyLines: a record broken across five lines,
// one of them blank, one looking like a record's start and one like the
// summary's header, is one record, read whole.
func TestParseTradeBillRecordOfManyLines(t *testing.T) {
	name := "line one\r\n`2024-05-01 09:00:00,`wx1\r\n\r\nline four"
	attach := "k=v\n总交易单数,x\nend"
	bill := freeTextBill(paidRow("T1", name, attach, "7.00"), refundRow("T2", "n\nm", "a\n`2024-05-01 10:00:00,", "1.50"),
		paidRow("T3", "c", "", "3.00"))
	want := strings.ReplaceAll(paidRow("T1", name, attach, "7.00"), "\r\n", "\n")
	b := wantPaid(t, bill, map[string]int64{"T1": 700, "T3": 300}, map[string]string{"T1": want})
	if len(b.Refunds) != 1 || b.Refunds[0].Amount != 150 || b.Refunds[0].OutRefundNo != "RT2" || b.Refunds[0].Status != "SUCCESS" {
		t.Fatalf("refunds = %+v", b.Refunds)
	}
}

// TestParseTradeBillSeparatorsInFreeText: free text holding ",`" gives a
// record more fields than the header, on one line or enough of them to
// fill a line before a break. The columns after the free text are still
// read from the record's end, even when the text holds what reads as
// 手续费, 费率 and the amounts. When the text before a break reads as a
// whole record's end, which line the record ends on is a guess: the bill
// is refused rather than read either way. (Text that reads as a whole
// record's end and then, after a break, as a whole record's start is two
// records byte for byte, and is read as two: no parser can tell; see the
// README on reconciliation.)
func TestParseTradeBillSeparatorsInFreeText(t *testing.T) {
	fakeTail := "0.07,`0.60%,`999.00,`0.00,`"
	cases := map[string][2]string{
		"one line":                        {"x,`" + fakeTail, "y,`" + fakeTail},
		"a line's worth, then a break":    {"a,`b,`c,`d,`e,`f,`g,`h\nmore", ""},
		"a record's tail, short, a break": {"x,`" + fakeTail + "\nmore", "z"},
		"in the attach, then a break":     {"p", "q,`r,`s,`t,`u,`v,`w\r\n,`" + fakeTail},
	}
	for name, free := range cases {
		t.Run(name, func(t *testing.T) {
			bill := freeTextBill(paidRow("T1", "a", "", "1.00"), paidRow("T2", free[0], free[1], "2.00"),
				refundRow("T3", free[0], free[1], "0.50"), paidRow("T4", "c", "", "3.00"))
			b := wantPaid(t, bill, map[string]int64{"T1": 100, "T2": 200, "T4": 300}, nil)
			if len(b.Refunds) != 1 || b.Refunds[0].Amount != 50 || b.Refunds[0].OutRefundNo != "RT3" {
				t.Fatalf("refunds = %+v", b.Refunds)
			}
		})
	}
	for name, free := range map[string][2]string{
		"product name": {"x,`y,`" + fakeTail + "\nmore", "z"},
		"attach":       {"p", "q,`" + fakeTail + "\r\n,`tail"},
	} {
		t.Run("whole before a break in the "+name, func(t *testing.T) {
			bill := freeTextBill(paidRow("T1", "a", "", "1.00"), paidRow("T2", free[0], free[1], "2.00"))
			b, err := ledger.ParseTradeBill([]byte(bill))
			if err == nil || !strings.Contains(err.Error(), "trade bill line 4: does not start a record") ||
				!strings.Contains(err.Error(), "line 3 before it is a whole one") {
				t.Fatalf("err = %v, want the bill refused (read: %+v)", err, b)
			}
		})
	}
}

// TestParseTradeBillCutShort: a record cut short, or broken outside its
// free text, still fails the bill, whatever follows it: it is never
// joined to the next record nor read in part.
func TestParseTradeBillCutShort(t *testing.T) {
	whole := paidRow("T2", "n", "", "2.00")
	cases := map[string]struct{ bill, want string }{
		"in the fixed columns, before a record": {freeTextBill(strings.SplitN(paidRow("T1", "n", "", "1.00"), ",`OTHERS", 2)[0], whole),
			"line 2: 10 fields"},
		"in the free text, before a record": {freeTextBill(strings.SplitN(paidRow("T1", "name", "attach", "1.00"), ",`attach", 2)[0], whole),
			"line 2: 21 fields"},
		"in the amounts, before a record": {freeTextBill(strings.TrimSuffix(paidRow("T1", "n", "", "1.00"), ",`1.00,`0.00,`"), whole),
			"line 2: 24 fields"},
		"the last, before the summary": {freeTextBill(whole, strings.SplitN(paidRow("T1", "name", "x", "1.00"), ",`x", 2)[0]),
			"line 3: 21 fields"},
		"a break in a fixed column": {freeTextBill(strings.Replace(paidRow("T1", "n", "", "1.00"), "`SUCCESS", "`SUC\r\nCESS", 1), whole),
			"lines 2-3 (one record): a line break in 交易状态, which is not free text"},
		"a break in the columns after the free text": {freeTextBill(strings.Replace(paidRow("T1", "n", "", "1.00"), "`0.60%", "`0.\n60%", 1), whole),
			"lines 2-3 (one record): a line break in 费率, which is not free text"},
		"a break in a column counted from the end": {freeTextBill(strings.Replace(paidRow("T1", "a,`b,`c", "d,`e", "1.00"), "`0.60%", "`0.\n60%", 1), whole),
			"lines 2-3 (one record): a line break in 费率"},
		// Free text can hold what reads as a whole record's start: as for
		// a record cut short before a whole one, the bill is refused.
		"a record's start after a break": {freeTextBill(paidRow("T1", "hi\n"+strings.SplitN(whole, ",`n,`", 2)[0]+",`fake", "", "1.00"), whole),
			"line 2: 21 fields"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			b, err := ledger.ParseTradeBill([]byte(tc.bill))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q (bill read: %+v)", err, tc.want, b)
			}
		})
	}
}

// TestParseTradeBillChecksFixedColumns: a record's fixed columns must read
// as a WeChat Pay record's, or the bill is refused with the line and the
// reason: 交易时间 a time, a known 交易状态, a currency code, amounts in
// yuan. Before, a record with an amount column of text was read, and one
// of an unknown state left out unseen. No record may follow the summary's
// header. A record of another day is read: a refund row may carry its
// payment's time.
func TestParseTradeBillChecksFixedColumns(t *testing.T) {
	ok := paidRow("T1", "a", "", "1.00")
	row := paidRow("T2", "b", "", "2.00")
	cases := map[string]struct{ bad, want string }{
		"not a time":         {strings.Replace(row, "2024-05-01 09:00:00", "2024-05-01 09:00", 1), "交易时间"},
		"unknown state":      {strings.Replace(row, "`SUCCESS", "`SUCCEEDED", 1), `交易状态 "SUCCEEDED" is not a trade state`},
		"not a currency":     {strings.Replace(row, "`CNY", "`yuan", 1), `货币种类 "yuan" is not a currency`},
		"refund amount text": {strings.TrimSuffix(row, ",`0.00,`") + ",`n/a,`", `申请退款金额: amount "n/a"`},
	}
	earlier := strings.Replace(row, "2024-05-01 09:00:00", "2024-04-20 23:59:59", 1)
	if b, err := ledger.ParseTradeBill([]byte(freeTextBill(ok, earlier))); err != nil || len(b.Payments) != 2 {
		t.Fatalf("a row of an earlier day: %v (bill read: %+v), want it read", err, b)
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := ledger.ParseTradeBill([]byte(freeTextBill(ok, tc.bad)))
			if err == nil || !strings.Contains(err.Error(), "trade bill line 3: ") || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want line 3 refused with %q", err, tc.want)
			}
		})
	}
	after := freeTextHeader + "\r\n" + ok + "\r\n" + freeTextSummary + row + "\r\n"
	if _, err := ledger.ParseTradeBill([]byte(after)); err == nil || !strings.Contains(err.Error(), "line 5: a record after the summary's header") {
		t.Fatalf("a record after the summary: err = %v", err)
	}
}

// TestParseTradeBillUnusedAmountMayBeEmpty: a SUCCESS row reads 订单金额
// and a REFUND row 申请退款金额; the other, left blank, does not refuse
// the bill. The one a row reads must be there.
func TestParseTradeBillUnusedAmountMayBeEmpty(t *testing.T) {
	paid := strings.TrimSuffix(paidRow("T1", "a", "", "1.00"), ",`0.00,`") + ",`,`"
	refund := strings.Replace(refundRow("T2", "b", "", "0.50"), ",`0.00,`0.50,`", ",`,`0.50,`", 1)
	b, err := ledger.ParseTradeBill([]byte(freeTextBill(paid, refund)))
	if err != nil || len(b.Payments) != 1 || len(b.Refunds) != 1 {
		t.Fatalf("bill with blank unused amounts: %v (read: %+v)", err, b)
	}
	noTotal := strings.Replace(paidRow("T3", "c", "", "1.00"), ",`0.60%,`1.00,`", ",`0.60%,`,`", 1)
	if _, err := ledger.ParseTradeBill([]byte(freeTextBill(noTotal))); err == nil {
		t.Fatal("a SUCCESS row without its 订单金额 was read")
	}
}
