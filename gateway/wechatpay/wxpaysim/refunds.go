package wxpaysim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"time"
)

// Refund statuses.
const (
	RefundProcessing = "PROCESSING"
	RefundSuccess    = "SUCCESS"
	RefundClosed     = "CLOSED"
	RefundAbnormal   = "ABNORMAL"
)

// ErrRefundState is returned when a refund cannot make the requested
// transition (e.g. resolving one that is not ABNORMAL).
var ErrRefundState = errors.New("wxpaysim: refund state")

// RefundRecord is the simulator's view of a refund. Amounts are fen, times UTC.
type RefundRecord struct {
	RefundID      string    `json:"refund_id"`
	OutRefundNo   string    `json:"out_refund_no"`
	OutTradeNo    string    `json:"out_trade_no"`
	TransactionID string    `json:"transaction_id"`
	Reason        string    `json:"reason,omitempty"`
	NotifyURL     string    `json:"notify_url,omitempty"`
	Amount        int64     `json:"amount"`
	Total         int64     `json:"total"`
	Status        string    `json:"status"`
	CreateTime    time.Time `json:"create_time"`
	SuccessTime   time.Time `json:"success_time,omitzero"`
	// Requests counts create calls naming this out_refund_no, duplicates included.
	Requests int `json:"requests"`
	// Executed counts how many times money was moved for this out_refund_no;
	// WeChat's idempotency keeps it at 1.
	Executed int `json:"executed"`
	// NotifyAttempts counts refund notification POSTs (an ABNORMAL refund
	// resolved later has two notifications); NotifyAcked reports whether
	// one was answered 200 or 204.
	NotifyAttempts int  `json:"notify_attempts"`
	NotifyAcked    bool `json:"notify_acked"`
	// NotifyAcks lists, in order, every refund notification POST the
	// merchant answered 200 or 204 (an ack): which notification, and when.
	NotifyAcks []NotifyAck `json:"notify_acks,omitempty"`
}

// NotifyAck is one notification POST answered 200 or 204. At is the wall clock
// (not Options.Now) when the answer came, in UTC, to compare with when the
// merchant's database says it stored the notification: a merchant must
// store it before it acks.
type NotifyAck struct {
	NotifyID  string    `json:"notify_id"`
	EventType string    `json:"event_type"`
	At        time.Time `json:"at"`
}

// clone copies r, its acks too.
func (r *RefundRecord) clone() RefundRecord {
	cp := *r
	cp.NotifyAcks = slices.Clone(r.NotifyAcks)
	return cp
}

// createRefundRequest is the body of POST /v3/refund/domestic/refunds.
type createRefundRequest struct {
	TransactionID string `json:"transaction_id"`
	OutTradeNo    string `json:"out_trade_no"`
	OutRefundNo   string `json:"out_refund_no"`
	Reason        string `json:"reason"`
	NotifyURL     string `json:"notify_url"`
	Amount        *struct {
		Refund   int64  `json:"refund"`
		Total    int64  `json:"total"`
		Currency string `json:"currency"`
	} `json:"amount"`
}

// Field formats of a refund application, from WeChat Pay's parameter
// table: out_refund_no string(64) of digits, letters and _-|*@,
// out_trade_no string(32) of digits, letters and _-|*, transaction_id
// string(32), reason string(80) (bytes: 26 Chinese characters fit).
var (
	outRefundNoPattern = regexp.MustCompile(`^[0-9A-Za-z_\-|*@]{1,64}$`)
	outTradeNoPattern  = regexp.MustCompile(`^[0-9A-Za-z_\-|*]{1,32}$`)
)

const maxReasonBytes = 80

// paramError returns why WeChat Pay would answer 400 PARAM_ERROR to req
// ("" if it would not). WeChat refuses a malformed field rather than
// storing or cutting it, so a gateway that sent one must not pass a test.
func (req *createRefundRequest) paramError() string {
	switch {
	case !outRefundNoPattern.MatchString(req.OutRefundNo):
		return "out_refund_no 须为1-64位数字、大小写字母或_-|*@"
	case req.OutTradeNo == "" && req.TransactionID == "":
		return "out_trade_no 与 transaction_id 须填一个"
	case req.OutTradeNo != "" && !outTradeNoPattern.MatchString(req.OutTradeNo):
		return "out_trade_no 须为1-32位数字、大小写字母或_-|*"
	case len(req.TransactionID) > 32:
		return "transaction_id 超过32位"
	case len(req.Reason) > maxReasonBytes:
		return "reason 超过80字节"
	case req.NotifyURL != "" && !validNotifyURL(req.NotifyURL):
		return "notify_url 须为可访问的http(s)地址，不能携带参数"
	case req.Amount == nil || req.Amount.Refund <= 0 || req.Amount.Total <= 0 || req.Amount.Currency != "CNY":
		return "amount 参数错误"
	}
	return ""
}

// validNotifyURL: WeChat Pay wants an absolute URL that carries no
// parameters (it posts to it as is).
func validNotifyURL(raw string) bool {
	u, err := url.Parse(raw)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != "" &&
		u.RawQuery == "" && !u.ForceQuery && u.Fragment == "" && u.User == nil
}

func (s *Sim) handleCreateRefund(_ *http.Request, body []byte) reply {
	var req createRefundRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return errReply(http.StatusBadRequest, "PARAM_ERROR", "请求体不是合法的JSON")
	}
	if msg := req.paramError(); msg != "" {
		s.countRefusal("param_error")
		return errReply(http.StatusBadRequest, "PARAM_ERROR", msg)
	}
	rec, rep, created := s.createRefund(req)
	if rec == nil {
		return rep
	}
	if created {
		s.scheduleSettle(rec.OutRefundNo)
	}
	return jsonReply(http.StatusOK, s.refundJSON(*rec))
}

// createRefund applies WeChat's rules under the lock and returns a copy of
// the refund, or an error reply. created is false for an idempotent repeat.
func (s *Sim) createRefund(req createRefundRequest) (*RefundRecord, reply, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r, ok := s.refunds[req.OutRefundNo]; ok {
		r.Requests++
		if !sameRefund(r, req) {
			s.refuse("changed_params")
			return nil, errReply(http.StatusBadRequest, "INVALID_REQUEST", "退款单号已存在，但请求参数与原退款不一致"), false
		}
		cp := *r
		return &cp, reply{}, false
	}
	o := s.findOrderLocked(req.OutTradeNo, req.TransactionID)
	if rep, reason := checkRefundable(o, req); reason != "" {
		s.refuse(reason)
		return nil, rep, false
	}
	// After checkRefundable, so an unpaid order or an over-refund keeps its
	// own answer. A repeat of a stored out_refund_no was answered above
	// whenever it comes: it is no new application and applies nothing.
	if s.opts.RefundGap > 0 && !o.LastRefundAt.IsZero() && s.now().Sub(o.LastRefundAt) < s.opts.RefundGap {
		s.refuse("order_gap")
		return nil, errReply(http.StatusTooManyRequests, "FREQUENCY_LIMITED", "同一笔订单多次退款的请求需相隔1分钟"), false
	}
	r := &RefundRecord{
		RefundID: "50" + s.newID(s.now().In(beijing).Format("20060102"), 27), OutRefundNo: req.OutRefundNo,
		OutTradeNo: o.OutTradeNo, TransactionID: o.TransactionID, Reason: req.Reason, NotifyURL: req.NotifyURL,
		Amount: req.Amount.Refund, Total: o.Amount, Status: RefundProcessing, CreateTime: s.now(),
		Requests: 1, Executed: 1,
	}
	s.refunds[r.OutRefundNo] = r
	s.refundList = append(s.refundList, r.OutRefundNo)
	o.Refunded += r.Amount
	o.RefundCount++
	o.LastRefundAt = r.CreateTime
	o.TradeState = TradeRefund
	cp := *r
	return &cp, reply{}, true
}

func sameRefund(r *RefundRecord, req createRefundRequest) bool {
	return (req.OutTradeNo == "" || req.OutTradeNo == r.OutTradeNo) &&
		(req.TransactionID == "" || req.TransactionID == r.TransactionID) &&
		req.Amount.Refund == r.Amount && req.Amount.Total == r.Total
}

func (s *Sim) findOrderLocked(outTradeNo, transactionID string) *OrderRecord {
	if outTradeNo != "" {
		return s.orders[outTradeNo]
	}
	for _, o := range s.orders {
		if o.TransactionID != "" && o.TransactionID == transactionID {
			return o
		}
	}
	return nil
}

// maxRefundsPerOrder is WeChat Pay's cap on the refunds of one order
// ("每个支付订单的部分退款次数不能超过50次"): the 51st application is
// refused however much is left of the order.
const maxRefundsPerOrder = 50

// checkRefundable answers like WeChat: unknown or unpaid orders are 404
// RESOURCE_NOT_EXISTS, a wrong total 400 INVALID_REQUEST, and so are a
// 51st refund of an order (CLOSED ones count: each was an application)
// and refunds beyond what is left of it. (403 NOT_ENOUGH is WeChat's
// answer when the merchant's refund balance is short, not the order's.)
// The reason it returns ("" when the refund may go) names the refusal
// for RefundsRefused.
func checkRefundable(o *OrderRecord, req createRefundRequest) (reply, string) {
	switch {
	case o == nil || o.TransactionID == "":
		return errReply(http.StatusNotFound, "RESOURCE_NOT_EXISTS", "订单不存在或未支付"), "not_paid"
	case req.Amount.Total != o.Amount:
		return errReply(http.StatusBadRequest, "INVALID_REQUEST", "订单金额与原订单不一致"), "wrong_total"
	case o.RefundCount >= maxRefundsPerOrder:
		return errReply(http.StatusBadRequest, "INVALID_REQUEST", "该订单退款次数已达上限(50次)"), "too_many_refunds"
	case o.Refunded+req.Amount.Refund > o.Amount:
		return errReply(http.StatusBadRequest, "INVALID_REQUEST", "申请退款金额超过订单可退金额"), "over_refund"
	}
	return reply{}, ""
}

// countRefusal is refuse for a caller that does not hold s.mu.
func (s *Sim) countRefusal(reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refuse(reason)
}

// refuse counts a refused refund application; s.mu is held.
func (s *Sim) refuse(reason string) {
	if s.refused == nil {
		s.refused = map[string]int{}
	}
	s.refused[reason]++
}

// RefundsRefused counts the refund applications refused by WeChat's own
// rules (not by injected faults), by reason: "over_refund" (more than is
// left of the order), "changed_params" (an out_refund_no sent again with
// other parameters), "wrong_total", "not_paid", "param_error" (a field
// WeChat Pay's format refuses: 400 PARAM_ERROR), "too_many_refunds" (a
// 51st refund of an order), "order_gap" (a new refund of an order sooner
// than Options.RefundGap after its last one: 429 FREQUENCY_LIMITED). A
// gateway that keeps its money rules causes none of the first two, and
// one that spaces the applications of an order causes no "order_gap":
// the simulator refusing them must not hide that the gateway sent them.
func (s *Sim) RefundsRefused() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.refused)
}

// countRefundMiss counts a query of out_refund_no answered "not found".
func (s *Sim) countRefundMiss(outRefundNo string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.refundMisses == nil {
		s.refundMisses = map[string]int{}
	}
	s.refundMisses[outRefundNo]++
}

// RefundsResentBlind returns, by out_refund_no, how many applications of
// a refund WeChat Pay holds came again without a query of it answered
// "not found" (a lagging one too) before them: a refund applied n times
// (RefundRecord.Requests) after m such answers counts n-1-m when that is
// positive. A merchant that asks before it sends again after an unclear
// answer has none, in whatever order its requests land; WeChat Pay's
// idempotency hides a blind re-send's effect, this does not. Applications
// refused before the refund existed (by a fault, or its rules) do not
// count.
func (s *Sim) RefundsResentBlind() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]int{}
	for no, r := range s.refunds {
		if extra := r.Requests - 1 - s.refundMisses[no]; extra > 0 {
			out[no] = extra
		}
	}
	return out
}

func (s *Sim) handleQueryRefund(r *http.Request, _ []byte) reply {
	no := r.PathValue("out_refund_no")
	rec, ok := s.queriedRefund(no)
	if !ok {
		rep := errReply(http.StatusNotFound, "RESOURCE_NOT_EXISTS", "退款单不存在")
		rep.missed = no
		return rep
	}
	return jsonReply(http.StatusOK, s.refundJSON(rec))
}

// queriedRefund returns a copy of the refund a query shows: none for an
// unknown refund, nor for one younger than Faults.RefundQueryLag.
func (s *Sim) queriedRefund(outRefundNo string) (RefundRecord, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rec, ok := s.refunds[outRefundNo]
	if !ok || s.queryLags(rec.CreateTime) {
		return RefundRecord{}, false
	}
	return *rec, true
}

// Refunds lists all refunds in creation order.
func (s *Sim) Refunds() []RefundRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]RefundRecord, 0, len(s.refundList))
	for _, no := range s.refundList {
		out = append(out, s.refunds[no].clone())
	}
	return out
}

// RefundCount returns how many times money was actually moved for
// outRefundNo (0 if WeChat never executed it).
func (s *Sim) RefundCount(outRefundNo string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r, ok := s.refunds[outRefundNo]; ok {
		return r.Executed
	}
	return 0
}

// scheduleSettle settles the refund after RefundSettleDelay unless the
// delay is negative (manual settlement).
func (s *Sim) scheduleSettle(outRefundNo string) {
	if s.opts.RefundSettleDelay < 0 {
		return
	}
	s.background(func(ctx context.Context) {
		if s.sleep(ctx, s.opts.RefundSettleDelay) {
			s.settle(outRefundNo)
		}
	})
}

// SettleRefunds settles every PROCESSING refund now and returns how many.
func (s *Sim) SettleRefunds() int {
	s.mu.Lock()
	var pending []string
	for _, no := range s.refundList {
		if s.refunds[no].Status == RefundProcessing {
			pending = append(pending, no)
		}
	}
	s.mu.Unlock()
	n := 0
	for _, no := range pending {
		if s.settle(no) {
			n++
		}
	}
	return n
}

// settle moves a PROCESSING refund to its outcome and notifies the
// merchant; an ABNORMAL one is resolved later (scheduleResolve).
func (s *Sim) settle(outRefundNo string) bool {
	notice, url, ok := s.finishRefund(outRefundNo)
	if !ok {
		return false
	}
	if notice.RefundStatus == RefundAbnormal {
		s.scheduleResolve(outRefundNo)
	}
	s.notifyRefund(notice, url)
	return true
}

// finishRefund applies the outcome under the lock and returns the
// notification plaintext and where to send it.
func (s *Sim) finishRefund(outRefundNo string) (RefundNotice, string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.refunds[outRefundNo]
	if !ok || r.Status != RefundProcessing {
		return RefundNotice{}, "", false
	}
	s.endRefund(r, s.refundOutcome())
	return s.refundNotice(r), s.refundNotifyURL(r), true
}

// endRefund moves r to status; s.mu is held.
func (s *Sim) endRefund(r *RefundRecord, status string) {
	r.Status = status
	switch status {
	case RefundSuccess:
		r.SuccessTime = s.now()
	case RefundClosed:
		s.orders[r.OutTradeNo].Refunded -= r.Amount // the money went back
	}
}

func (s *Sim) refundNotifyURL(r *RefundRecord) string {
	if r.NotifyURL != "" {
		return r.NotifyURL
	}
	return s.opts.RefundNotifyURL
}

// notifyRefund delivers a refund notification to url ("" sends none),
// redelivering it until acked.
func (s *Sim) notifyRefund(notice RefundNotice, url string) {
	if url == "" {
		return
	}
	n, err := s.keys.RefundNotification(notice, s.currentSignMode(), s.now())
	if err != nil {
		s.log.Error("wxpaysim: refund notification", "out_refund_no", notice.OutRefundNo, "err", err)
		return
	}
	s.deliverInBackground(n, url, func(status int) { s.recordRefundNotify(notice.OutRefundNo, n, status) })
}

// scheduleResolve resolves an ABNORMAL refund to SUCCESS after
// Faults.AbnormalResolveAfter, unless that is 0.
func (s *Sim) scheduleResolve(outRefundNo string) {
	d := s.abnormalResolveAfter()
	if d <= 0 {
		return
	}
	s.background(func(ctx context.Context) {
		if s.sleep(ctx, d) {
			_ = s.ResolveAbnormal(outRefundNo, RefundSuccess) // an error: resolved by hand meanwhile
		}
	})
}

// ResolveAbnormal ends an ABNORMAL refund as the person handling it does
// (the merchant's staff, or the user who fixed the card): SUCCESS pays it
// now, CLOSED gives the money back to the order. The merchant is notified
// (REFUND.SUCCESS or REFUND.CLOSED) as when a refund settles, and queries
// answer the new status. ErrRefundState if the refund is not ABNORMAL or
// status is neither.
func (s *Sim) ResolveAbnormal(outRefundNo, status string) error {
	if status != RefundSuccess && status != RefundClosed {
		return fmt.Errorf("%w: an ABNORMAL refund ends SUCCESS or CLOSED, not %q", ErrRefundState, status)
	}
	notice, url, err := s.resolveRefund(outRefundNo, status)
	if err != nil {
		return err
	}
	s.notifyRefund(notice, url)
	return nil
}

func (s *Sim) resolveRefund(outRefundNo, status string) (RefundNotice, string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.refunds[outRefundNo]
	if !ok || r.Status != RefundAbnormal {
		return RefundNotice{}, "", fmt.Errorf("%w: refund %s is unknown or not ABNORMAL", ErrRefundState, outRefundNo)
	}
	s.endRefund(r, status)
	return s.refundNotice(r), s.refundNotifyURL(r), nil
}

func (s *Sim) refundNotice(r *RefundRecord) RefundNotice {
	return RefundNotice{
		MchID: s.keys.MchID, OutTradeNo: r.OutTradeNo, TransactionID: r.TransactionID,
		OutRefundNo: r.OutRefundNo, RefundID: r.RefundID, RefundStatus: r.Status,
		SuccessTime: wechatTime(r.SuccessTime), UserReceivedAccount: userReceivedAccount,
		Amount: RefundNoticeAmount{Total: r.Total, Refund: r.Amount, PayerTotal: r.Total, PayerRefund: r.Amount},
	}
}

// recordRefundNotify counts a POST of refund notification n answered
// status, and keeps it when it was acked.
func (s *Sim) recordRefundNotify(outRefundNo string, n Notification, status int) {
	ack := NotifyAck{NotifyID: n.ID, EventType: n.EventType, At: time.Now().UTC()} // before waiting for the lock
	if acked(status) && s.opts.OnRefundAck != nil {
		s.opts.OnRefundAck(outRefundNo, ack)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.refunds[outRefundNo]
	if !ok {
		return
	}
	r.NotifyAttempts++
	if acked(status) {
		r.NotifyAcked = true
		r.NotifyAcks = append(r.NotifyAcks, ack)
	}
}

// userReceivedAccount is where a balance-paid refund lands.
const userReceivedAccount = "支付用户零钱"

// refundJSON is the refund object of the refund APIs.
type refundJSON struct {
	RefundID            string           `json:"refund_id"`
	OutRefundNo         string           `json:"out_refund_no"`
	TransactionID       string           `json:"transaction_id"`
	OutTradeNo          string           `json:"out_trade_no"`
	Channel             string           `json:"channel"`
	UserReceivedAccount string           `json:"user_received_account"`
	SuccessTime         string           `json:"success_time,omitempty"`
	CreateTime          string           `json:"create_time"`
	Status              string           `json:"status"`
	FundsAccount        string           `json:"funds_account"`
	Amount              refundAmountJSON `json:"amount"`
	PromotionDetail     []any            `json:"promotion_detail"`
}

type refundAmountJSON struct {
	Total            int64  `json:"total"`
	Refund           int64  `json:"refund"`
	From             []any  `json:"from"`
	PayerTotal       int64  `json:"payer_total"`
	PayerRefund      int64  `json:"payer_refund"`
	SettlementRefund int64  `json:"settlement_refund"`
	SettlementTotal  int64  `json:"settlement_total"`
	DiscountRefund   int64  `json:"discount_refund"`
	Currency         string `json:"currency"`
}

func (s *Sim) refundJSON(r RefundRecord) refundJSON {
	return refundJSON{
		RefundID: r.RefundID, OutRefundNo: r.OutRefundNo, TransactionID: r.TransactionID,
		OutTradeNo: r.OutTradeNo, Channel: "ORIGINAL", UserReceivedAccount: userReceivedAccount,
		SuccessTime: wechatTime(r.SuccessTime), CreateTime: wechatTime(r.CreateTime),
		Status: r.Status, FundsAccount: "AVAILABLE", PromotionDetail: []any{},
		Amount: refundAmountJSON{
			Total: r.Total, Refund: r.Amount, From: []any{}, PayerTotal: r.Total, PayerRefund: r.Amount,
			SettlementRefund: r.Amount, SettlementTotal: r.Total, Currency: "CNY",
		},
	}
}
