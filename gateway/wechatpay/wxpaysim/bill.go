package wxpaysim

import (
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"
)

// billLinkTTL is how long a download_url stays valid, as at WeChat.
const billLinkTTL = 30 * time.Second

// BillHeader is the first line of an ALL trade bill.
const BillHeader = "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注"

// BillSummaryHeader heads the summary section at the end of a trade bill.
const BillSummaryHeader = "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额"

// billProduct and billAttach fill 商品名称 and 商户数据包. WeChat does not
// quote fields, so they hold commas as a real bill can.
const (
	billProduct = "T-shirt, blue"
	billAttach  = "ref=1,src=app"
)

// feeRate is the simulated channel fee, 0.6 %, in thousandths.
const feeRate = 6

// billFile is a generated bill waiting to be downloaded.
type billFile struct {
	content []byte
	expires time.Time
}

// billRow is one line of a bill before formatting. Amounts are fen.
type billRow struct {
	at                                   time.Time
	txID, outTradeNo, openID, tradeState string
	refundID, outRefundNo, refundStatus  string
	settleFen, refund, applied           int64
	fee, orderTotal                      int64
}

func (s *Sim) handleTradeBill(r *http.Request, _ []byte) reply {
	billType := r.URL.Query().Get("bill_type")
	day, err := time.ParseInLocation("2006-01-02", r.URL.Query().Get("bill_date"), beijing)
	if err != nil || !validBillType(billType) {
		return errReply(http.StatusBadRequest, "PARAM_ERROR", "bill_date 或 bill_type 参数错误")
	}
	rows := s.billRows(day, billType)
	if len(rows) == 0 {
		return errReply(http.StatusBadRequest, "NO_STATEMENT_EXIST", "账单文件不存在")
	}
	content := s.formatBill(rows)
	token, _ := randomString(32)
	s.mu.Lock()
	s.bills[token] = billFile{content: content, expires: s.now().Add(billLinkTTL)}
	s.mu.Unlock()
	sum := sha1.Sum(content)
	if s.currentBillFaults().BadHash {
		sum[0] ^= 0xff
	}
	return jsonReply(http.StatusOK, map[string]string{
		"hash_type":    "SHA1",
		"hash_value":   hex.EncodeToString(sum[:]),
		"download_url": s.baseURL(r) + "/v3/billdownload/file?token=" + token,
	})
}

func validBillType(t string) bool {
	return t == "" || t == "ALL" || t == "SUCCESS" || t == "REFUND"
}

func (s *Sim) baseURL(r *http.Request) string {
	if s.opts.BaseURL != "" {
		return strings.TrimRight(s.opts.BaseURL, "/")
	}
	// A request that kept WeChat's Host header (a rewriting client) gets
	// WeChat's real link, which such a client rewrites again.
	if r.TLS != nil || strings.HasSuffix(r.Host, ".mch.weixin.qq.com") {
		return "https://" + r.Host
	}
	return "http://" + r.Host
}

func (s *Sim) handleBillDownload(r *http.Request, _ []byte) reply {
	token := r.URL.Query().Get("token")
	s.mu.Lock()
	f, ok := s.bills[token]
	s.mu.Unlock()
	if !ok || s.now().After(f.expires) {
		return errReply(http.StatusBadRequest, "INVALID_REQUEST", "下载链接无效或已过期")
	}
	return reply{status: http.StatusOK, body: f.content, raw: true}
}

// billRows collects the payment and refund rows of one UTC+8 day, with the
// bill faults applied, sorted by time.
func (s *Sim) billRows(day time.Time, billType string) []billRow {
	faults := s.currentBillFaults()
	s.mu.Lock()
	var rows []billRow
	if billType != "REFUND" {
		rows = append(rows, s.paymentRowsLocked(day, faults)...)
	}
	if billType != "SUCCESS" {
		rows = append(rows, s.refundRowsLocked(day, faults)...)
	}
	s.mu.Unlock()
	sort.SliceStable(rows, func(i, j int) bool { return rows[i].at.Before(rows[j].at) })
	return rows
}

func sameDay(t, day time.Time) bool {
	return !t.IsZero() && !t.Before(day) && t.Before(day.AddDate(0, 0, 1))
}

func (s *Sim) paymentRowsLocked(day time.Time, f BillFaults) []billRow {
	var rows []billRow
	for _, no := range s.orderList {
		o := s.orders[no]
		if o.TransactionID == "" || !sameDay(o.SuccessTime, day) || no == f.DropOutTradeNo {
			continue
		}
		amount := o.Amount
		if v, ok := f.ChangeAmount[no]; ok {
			amount = v
		}
		rows = append(rows, billRow{
			at: o.SuccessTime, txID: o.TransactionID, outTradeNo: no, openID: o.OpenID,
			tradeState: "SUCCESS", settleFen: amount, fee: fee(amount), orderTotal: amount,
		})
	}
	return rows
}

func (s *Sim) refundRowsLocked(day time.Time, f BillFaults) []billRow {
	var rows []billRow
	for _, no := range s.refundList {
		r := s.refunds[no]
		if r.Status == RefundClosed || !sameDay(r.CreateTime, day) {
			continue
		}
		rows = append(rows, s.refundRowLocked(r.CreateTime, r.OutTradeNo, r.RefundID, r.OutRefundNo, r.Amount, r.Status))
	}
	if x := f.ExtraRefund; x != nil {
		id := x.RefundID
		if id == "" {
			id = "50" + s.newID(day.Format("20060102"), 27)
		}
		rows = append(rows, s.refundRowLocked(day.Add(12*time.Hour), x.OutTradeNo, id, x.OutRefundNo, x.Amount, RefundSuccess))
	}
	return rows
}

func (s *Sim) refundRowLocked(at time.Time, outTradeNo, refundID, outRefundNo string, amount int64, status string) billRow {
	row := billRow{
		at: at, outTradeNo: outTradeNo, tradeState: "REFUND", refundID: refundID, outRefundNo: outRefundNo,
		refund: amount, applied: amount, fee: -fee(amount), refundStatus: status,
	}
	if o, ok := s.orders[outTradeNo]; ok {
		row.txID, row.openID = o.TransactionID, o.OpenID
	}
	return row
}

// fee is the 0.6 % channel fee in fen, rounded half up.
func fee(amount int64) int64 {
	if amount < 0 {
		return -fee(-amount)
	}
	return (amount*feeRate + 500) / 1000
}

// formatBill renders rows in WeChat's format: every field prefixed with a
// backtick, amounts in yuan, CRLF line ends, then the summary section.
func (s *Sim) formatBill(rows []billRow) []byte {
	var b strings.Builder
	b.WriteString(BillHeader + "\r\n")
	var sum struct{ settle, refund, fee, total, applied int64 }
	for _, r := range rows {
		writeBillLine(&b, s.billFields(r))
		sum.settle += r.settleFen
		sum.refund += r.refund
		sum.fee += r.fee
		sum.total += r.orderTotal
		sum.applied += r.applied
	}
	b.WriteString(BillSummaryHeader + "\r\n")
	writeBillLine(&b, []string{
		fmt.Sprint(len(rows)), Yuan(sum.settle), Yuan(sum.refund), Yuan(0),
		Yuan(sum.fee), Yuan(sum.total), Yuan(sum.applied),
	})
	return []byte(b.String())
}

func (s *Sim) billFields(r billRow) []string {
	refundID, outRefundNo, refundType := "0", "0", ""
	if r.tradeState == "REFUND" {
		refundID, outRefundNo, refundType = r.refundID, r.outRefundNo, "ORIGINAL"
	}
	return []string{
		r.at.In(beijing).Format("2006-01-02 15:04:05"), s.keys.AppID, s.keys.MchID, "0", "",
		r.txID, r.outTradeNo, r.openID, "JSAPI", r.tradeState, "OTHERS", "CNY",
		Yuan(r.settleFen), Yuan(0), refundID, outRefundNo, Yuan(r.refund), Yuan(0),
		refundType, r.refundStatus, billProduct, billAttach, Yuan(r.fee), "0.60%",
		Yuan(r.orderTotal), Yuan(r.applied), "",
	}
}

func writeBillLine(b *strings.Builder, fields []string) {
	for i, f := range fields {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteByte('`')
		b.WriteString(f)
	}
	b.WriteString("\r\n")
}

// Yuan formats fen as yuan with two decimals ("12.34", "-0.05").
func Yuan(fen int64) string {
	sign := ""
	if fen < 0 {
		sign, fen = "-", -fen
	}
	return fmt.Sprintf("%s%d.%02d", sign, fen/100, fen%100)
}
