package ledger_test

import (
	"strings"
	"testing"

	"paygateway/ledger"
)

func TestParseYuan(t *testing.T) {
	cases := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"12.34", 1234, true}, {"0.01", 1, true}, {"-0.05", -5, true}, {"7", 700, true}, {"7.5", 750, true},
		{"100000000.00", 10_000_000_000, true}, {"", 0, false}, {"1.234", 0, false}, {"abc", 0, false},
		{"1e3", 0, false}, {"--1", 0, false}, {"1.-5", 0, false}, {"+1", 0, false}, {".5", 0, false},
	}
	for _, tc := range cases {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ledger.ParseYuan(tc.in)
			if (err == nil) != tc.ok || got != tc.want {
				t.Fatalf("ParseYuan(%q) = %d, %v; want %d ok=%v", tc.in, got, err, tc.want, tc.ok)
			}
		})
	}
}

func TestParseTradeBill(t *testing.T) {
	header := "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注"
	bill := header + "\r\n" +
		"`2024-05-01 09:00:00,`wx1,`190,`0,`,`4200001,`T1,`o1,`JSAPI,`SUCCESS,`OTHERS,`CNY,`12.34,`0.00,`0,`0,`0.00,`0.00,`,`,`T-shirt, blue,`a=1,b=2,`0.07,`0.60%,`12.34,`0.00,`\r\n" +
		"`2024-05-01 10:00:00,`wx1,`190,`0,`,`4200001,`T1,`o1,`JSAPI,`REFUND,`OTHERS,`CNY,`0.00,`0.00,`5001,`R1,`2.00,`0.00,`ORIGINAL,`SUCCESS,`商品，红色, 大号,`,`-0.01,`0.60%,`0.00,`2.34,`\r\n" +
		"总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额\r\n`2,`12.34,`2.34,`0.00,`0.06,`12.34,`2.34\r\n"
	b, err := ledger.ParseTradeBill([]byte(bill))
	if err != nil {
		t.Fatal(err)
	}
	if len(b.Payments) != 1 || b.Payments[0].Amount != 1234 || b.Payments[0].OutTradeNo != "T1" ||
		b.Payments[0].Time.Format("15:04") != "01:00" || b.Payments[0].Currency != "CNY" {
		t.Fatalf("payments = %+v", b.Payments)
	}
	if len(b.Refunds) != 1 || b.Refunds[0].Amount != 234 || b.Refunds[0].OutRefundNo != "R1" || b.Refunds[0].Status != "SUCCESS" {
		t.Fatalf("refunds = %+v", b.Refunds)
	}
	if len(b.Payments) != 1 || b.Payments[0].Line != strings.Split(bill, "\r\n")[1] {
		t.Fatalf("payment line = %q", b.Payments[0].Line)
	}
	// A summary header with an empty or trailing column is still the summary.
	loose := strings.Replace(bill, "申请退款总金额\r\n", "申请退款总金额,,\r\n", 1)
	if lb, err := ledger.ParseTradeBill([]byte(loose)); err != nil || len(lb.Payments) != 1 || len(lb.Refunds) != 1 {
		t.Fatalf("summary header with empty columns: %v", err)
	}
	if empty, err := ledger.ParseTradeBill(nil); err != nil || len(empty.Payments) != 0 {
		t.Fatalf("empty bill: %v", err)
	}
	if _, err := ledger.ParseTradeBill([]byte("not,a,bill\r\n")); err == nil {
		t.Fatal("garbage parsed")
	}
	unprefixed := header + "\r\n2024-05-01 09:00:00,wx1,190\r\n"
	if _, err := ledger.ParseTradeBill([]byte(unprefixed)); err == nil || !strings.Contains(err.Error(), "backtick") {
		t.Fatalf("line without backticks: err=%v", err)
	}
}

// TestParseTradeBillFreeText: the product name and the attach are the
// merchant's and the payer's text, which WeChat does not escape. One
// holding ",`" (the field separator) or a line break still parses, each
// column read where it is, even when the text after the break starts with
// a backtick or with 总交易单数; the summary still ends the rows. A line
// cut short still fails the bill.
func TestParseTradeBillFreeText(t *testing.T) {
	header := "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注"
	line := func(no, name, attach, total string) string {
		return "`2024-05-01 09:00:00,`wx1,`190,`0,`,`42" + no + ",`" + no + ",`o1,`JSAPI,`SUCCESS,`OTHERS,`CNY,`" + total +
			",`0.00,`0,`0,`0.00,`0.00,`,`,`" + name + ",`" + attach + ",`0.07,`0.60%,`" + total + ",`0.00,`"
	}
	bill := header + "\r\n" +
		line("T1", "shirt", "a,`b", "12.34") + "\r\n" +
		line("T2", "red\r\nlarge", "", "5.00") + "\r\n" +
		line("T3", "plain", "x", "1.00") + "\r\n" +
		line("T4", "engraving:\r\n`quoted`", "", "2.00") + "\r\n" +
		line("T5", "x\n总交易单数", "y\n`2024-05-01", "3.00") + "\r\n" +
		"总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额\r\n" +
		"`5,`23.34,`0.00,`0.00,`0.12,`23.34,`0.00\r\n"
	b, err := ledger.ParseTradeBill([]byte(bill))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int64{"T1": 1234, "T2": 500, "T3": 100, "T4": 200, "T5": 300}
	if len(b.Payments) != len(want) {
		t.Fatalf("payments = %+v, want %d", b.Payments, len(want))
	}
	for _, p := range b.Payments {
		if p.Amount != want[p.OutTradeNo] || p.TransactionID != "42"+p.OutTradeNo || p.AppID != "wx1" {
			t.Errorf("payment %+v, want %s of %d", p, p.OutTradeNo, want[p.OutTradeNo])
		}
	}
	cut := header + "\r\n" + strings.SplitN(line("T4", "n", "", "1.00"), ",`OTHERS", 2)[0] + "\r\n" + line("T5", "n", "", "2.00") + "\r\n"
	if _, err := ledger.ParseTradeBill([]byte(cut)); err == nil || !strings.Contains(err.Error(), "fields") {
		t.Fatalf("a line cut short before a whole one: err=%v, want the bill refused", err)
	}
}
