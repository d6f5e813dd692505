package wxpaysim_test

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/wechatpay-apiv3/wechatpay-go/core"
	"github.com/wechatpay-apiv3/wechatpay-go/core/option"

	"paygateway/gateway/wechatpay/wxpaysim"
	"paygateway/ledger/daytest"
)

// fetchBill asks for today's (UTC+8) bill and downloads it.
func fetchBill(t *testing.T, sim *wxpaysim.Sim, base string) (string, string) {
	t.Helper()
	c := sdkClient(t, sim.Keys(), base, 5*time.Second)
	day := time.Now().In(time.FixedZone("CST", 8*3600)).Format(time.DateOnly)
	res, err := c.Get(context.Background(), "https://api.mch.weixin.qq.com/v3/bill/tradebill?bill_type=ALL&bill_date="+day)
	if err != nil {
		t.Fatalf("tradebill: %v", err)
	}
	var link struct{ HashType, HashValue, DownloadURL string }
	raw, _ := io.ReadAll(res.Response.Body)
	if err := json.Unmarshal(raw, &struct {
		HashType    *string `json:"hash_type"`
		HashValue   *string `json:"hash_value"`
		DownloadURL *string `json:"download_url"`
	}{&link.HashType, &link.HashValue, &link.DownloadURL}); err != nil {
		t.Fatal(err)
	}
	if link.HashType != "SHA1" || !strings.HasPrefix(link.DownloadURL, base+"/v3/billdownload/file?token=") {
		t.Fatalf("link=%+v", link)
	}
	if _, err := c.Get(context.Background(), link.DownloadURL); err == nil {
		t.Fatal("download passed response validation, want an unsigned file")
	}
	k := sim.Keys()
	dl, err := core.NewClient(context.Background(),
		option.WithMerchantCredential(k.MchID, k.MerchantSerial, k.MerchantKey), option.WithoutValidator())
	if err != nil {
		t.Fatal(err)
	}
	res, err = dl.Get(context.Background(), link.DownloadURL)
	if err != nil {
		t.Fatalf("download: %v", err)
	}
	defer res.Response.Body.Close()
	body, _ := io.ReadAll(res.Response.Body)
	return string(body), link.HashValue
}

func TestTradeBill(t *testing.T) {
	daytest.AwayFromMidnight(t, time.Minute)
	sim, srv := startSim(t, wxpaysim.Options{RefundSettleDelay: -1})
	ctx := context.Background()
	for _, p := range []struct {
		no     string
		amount int64
	}{{"T1", 1234}, {"T2", 500}} {
		if _, err := sim.Pay(ctx, p.no, p.amount, "o1", true); err != nil {
			t.Fatal(err)
		}
	}
	c := sdkClient(t, sim.Keys(), srv.URL, 5*time.Second)
	if _, err := createRefund(ctx, c, "T1", "R1", 234, 1234); err != nil {
		t.Fatal(err)
	}
	bill, hash := fetchBill(t, sim, srv.URL)
	sum := sha1.Sum([]byte(bill))
	if hex.EncodeToString(sum[:]) != hash {
		t.Fatal("sha1 mismatch")
	}
	lines := strings.Split(strings.TrimSuffix(bill, "\r\n"), "\r\n")
	if len(lines) != 6 || lines[0] != wxpaysim.BillHeader || lines[4] != wxpaysim.BillSummaryHeader {
		t.Fatalf("bill:\n%s", bill)
	}
	for _, want := range []string{"`T1,`o1,`JSAPI,`SUCCESS,`OTHERS,`CNY,`12.34,", "`T2,`o1,`JSAPI,`SUCCESS,`OTHERS,`CNY,`5.00,",
		"`REFUND,`OTHERS,`CNY,`0.00,`0.00,`", "`R1,`2.34,`0.00,`ORIGINAL,`PROCESSING,"} {
		if !strings.Contains(bill, want) {
			t.Fatalf("bill lacks %q:\n%s", want, bill)
		}
	}
	if want := "`3,`17.34,`2.34,`0.00,`0.09,`17.34,`2.34"; lines[5] != want {
		t.Fatalf("summary=%s, want %s", lines[5], want)
	}
	// Fields are separated by ",`": the product name holds a plain comma.
	if n := strings.Count(lines[1], ",`"); n != 26 || !strings.Contains(lines[1], ",`T-shirt, blue,`") {
		t.Fatalf("row has %d fields, want 27", n+1)
	}
}

func TestTradeBillFaults(t *testing.T) {
	daytest.AwayFromMidnight(t, time.Minute)
	sim, srv := startSim(t, wxpaysim.Options{})
	ctx := context.Background()
	for _, no := range []string{"T1", "T2", "T3"} {
		if _, err := sim.Pay(ctx, no, 100, "o1", true); err != nil {
			t.Fatal(err)
		}
	}
	sim.SetBillFaults(wxpaysim.BillFaults{
		DropOutTradeNo: "T1",
		ChangeAmount:   map[string]int64{"T2": 99},
		ExtraRefund:    &wxpaysim.BillRefund{OutTradeNo: "T3", OutRefundNo: "RX", Amount: 50},
	})
	bill, _ := fetchBill(t, sim, srv.URL)
	if strings.Contains(bill, "`T1,") {
		t.Fatalf("T1 not dropped:\n%s", bill)
	}
	for _, want := range []string{"`T2,`o1,`JSAPI,`SUCCESS,`OTHERS,`CNY,`0.99,", "`T3,`o1,`JSAPI,`SUCCESS,`OTHERS,`CNY,`1.00,", "`RX,`0.50,"} {
		if !strings.Contains(bill, want) {
			t.Fatalf("bill lacks %q:\n%s", want, bill)
		}
	}
	if len(sim.Refunds()) != 0 {
		t.Fatal("extra bill refund executed a refund")
	}
}

func TestYuan(t *testing.T) {
	for fen, want := range map[int64]string{0: "0.00", 1: "0.01", 1234: "12.34", -5: "-0.05", 100000: "1000.00"} {
		if got := wxpaysim.Yuan(fen); got != want {
			t.Fatalf("Yuan(%d)=%s, want %s", fen, got, want)
		}
	}
}
