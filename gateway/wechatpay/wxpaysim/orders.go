package wxpaysim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"
)

// Trade states WeChat Pay reports.
const (
	TradeNotPay  = "NOTPAY"
	TradeSuccess = "SUCCESS"
	TradeRefund  = "REFUND" // paid, and at least one refund was requested
	TradeClosed  = "CLOSED"
)

var tradeStateDesc = map[string]string{
	TradeNotPay:  "订单未支付",
	TradeSuccess: "支付成功",
	TradeRefund:  "转入退款",
	TradeClosed:  "订单已关闭",
}

// ErrOrderState is returned by the control API when an order cannot make
// the requested transition (e.g. paying a closed order).
var ErrOrderState = errors.New("wxpaysim: order state")

// OrderRecord is the simulator's view of an order. Amounts are fen, times UTC.
type OrderRecord struct {
	OutTradeNo    string    `json:"out_trade_no"`
	TransactionID string    `json:"transaction_id,omitempty"`
	OpenID        string    `json:"openid,omitempty"`
	TradeState    string    `json:"trade_state"`
	Amount        int64     `json:"amount"`
	Coupon        int64     `json:"coupon,omitempty"` // paid by a coupon: payer_total is Amount less it
	CloseCalls    int       `json:"close_calls"`      // 1 once the close-order API closed it
	Refunded      int64     `json:"refunded"`         // sum of refunds not CLOSED
	RefundCount   int       `json:"refund_count"`     // refunds executed, CLOSED included
	CreateTime    time.Time `json:"create_time"`
	SuccessTime   time.Time `json:"success_time,omitzero"`
	// LastRefundAt is when the last refund of the order was applied (by
	// Options.Now), CLOSED ones included: Options.RefundGap counts from it.
	LastRefundAt time.Time `json:"last_refund_at,omitzero"`
	// NotifyID is the id of the payment notification (same on every resend).
	NotifyID string `json:"notify_id,omitempty"`
	// NotifyAttempts counts payment notification POSTs; NotifyStatus is the
	// last answer's HTTP status (0 if the POST failed).
	NotifyAttempts int  `json:"notify_attempts"`
	NotifyStatus   int  `json:"notify_status"`
	NotifyAcked    bool `json:"notify_acked"` // some attempt got a 200 or 204
}

// RegisterOrder records an unpaid (NOTPAY) order, as if the merchant had
// placed it. Registering the same order again with the same amount is a no-op.
func (s *Sim) RegisterOrder(outTradeNo string, amount int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, err := s.orderLocked(outTradeNo, amount)
	return err
}

// orderLocked returns the order, creating it as NOTPAY if unknown.
func (s *Sim) orderLocked(outTradeNo string, amount int64) (*OrderRecord, error) {
	if outTradeNo == "" || amount <= 0 {
		return nil, fmt.Errorf("%w: order %q needs an out_trade_no and a positive amount", ErrOrderState, outTradeNo)
	}
	if o, ok := s.orders[outTradeNo]; ok {
		if o.Amount != amount {
			return nil, fmt.Errorf("%w: order %s has amount %d, not %d", ErrOrderState, outTradeNo, o.Amount, amount)
		}
		return o, nil
	}
	o := &OrderRecord{OutTradeNo: outTradeNo, Amount: amount, TradeState: TradeNotPay, CreateTime: s.now()}
	s.orders[outTradeNo] = o
	s.orderList = append(s.orderList, outTradeNo)
	return o, nil
}

// Pay marks the order paid (creating it if unknown) and, unless
// dropNotification, POSTs a signed TRANSACTION.SUCCESS to Options.NotifyURL,
// retrying in the background per NotifyRetryDelays if it is not acked. Paying
// an already paid order returns its transaction and notifies nothing.
func (s *Sim) Pay(ctx context.Context, outTradeNo string, amount int64, openid string, dropNotification bool) (Transaction, error) {
	tx, _, err := s.pay(ctx, outTradeNo, amount, openid, dropNotification)
	return tx, err
}

// pay is Pay that also returns the first notification answer's status.
func (s *Sim) pay(ctx context.Context, outTradeNo string, amount int64, openid string, drop bool) (Transaction, int, error) {
	tx, n, fresh, err := s.markPaid(outTradeNo, amount, openid)
	if err != nil || !fresh || drop || s.opts.NotifyURL == "" {
		return tx, 0, err
	}
	status := s.notifyPayment(ctx, outTradeNo, n)
	return tx, status, nil
}

// markPaid moves the order to SUCCESS and builds its notification; fresh is
// false when it was already paid.
func (s *Sim) markPaid(outTradeNo string, amount int64, openid string) (Transaction, Notification, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	o, err := s.orderLocked(outTradeNo, amount)
	if err != nil {
		return Transaction{}, Notification{}, false, err
	}
	switch o.TradeState {
	case TradeSuccess, TradeRefund:
		return s.transaction(o), Notification{}, false, nil
	case TradeClosed:
		return Transaction{}, Notification{}, false, fmt.Errorf("%w: order %s is closed", ErrOrderState, outTradeNo)
	}
	if openid == "" {
		openid = "oSim" + s.newID("", 24)
	}
	o.TradeState, o.OpenID, o.SuccessTime = TradeSuccess, openid, s.now()
	o.TransactionID = "4200000" + s.newID(o.SuccessTime.In(beijing).Format("20060102"), 21)
	tx := s.transaction(o)
	n, err := s.keys.PaymentNotification(tx, s.signMode, s.now())
	if err != nil {
		return Transaction{}, Notification{}, false, err
	}
	o.NotifyID = n.ID
	s.payNotes[outTradeNo] = n
	return tx, n, true, nil
}

// CloseOrder closes an unpaid order (trade_state CLOSED).
func (s *Sim) CloseOrder(outTradeNo string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	o, ok := s.orders[outTradeNo]
	if !ok || (o.TradeState != TradeNotPay && o.TradeState != TradeClosed) {
		return fmt.Errorf("%w: order %s is unknown or paid", ErrOrderState, outTradeNo)
	}
	o.TradeState = TradeClosed
	return nil
}

// ResendPayment re-delivers the order's payment notification once: same
// notification id and body, fresh nonce, timestamp and signature. It returns
// the answer's HTTP status.
func (s *Sim) ResendPayment(ctx context.Context, outTradeNo string) (int, error) {
	s.mu.Lock()
	n, ok := s.payNotes[outTradeNo]
	s.mu.Unlock()
	if !ok {
		return 0, fmt.Errorf("%w: order %s has no payment notification", ErrOrderState, outTradeNo)
	}
	if s.opts.NotifyURL == "" {
		return 0, errors.New("wxpaysim: no NotifyURL configured")
	}
	again, err := n.Resign(s.keys, s.currentSignMode(), s.now())
	if err != nil {
		return 0, fmt.Errorf("wxpaysim: resend %s: %w", outTradeNo, err)
	}
	status, err := s.deliver(ctx, again, s.opts.NotifyURL)
	s.recordPaymentNotify(outTradeNo, status)
	return status, err
}

// Orders lists all orders in creation order.
func (s *Sim) Orders() []OrderRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]OrderRecord, 0, len(s.orderList))
	for _, no := range s.orderList {
		out = append(out, *s.orders[no])
	}
	return out
}

// Order returns one order.
func (s *Sim) Order(outTradeNo string) (OrderRecord, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	o, ok := s.orders[outTradeNo]
	if !ok {
		return OrderRecord{}, false
	}
	return *o, true
}

// transaction renders o as WeChat's transaction object.
func (s *Sim) transaction(o *OrderRecord) Transaction {
	tx := Transaction{
		AppID: s.keys.AppID, MchID: s.keys.MchID, OutTradeNo: o.OutTradeNo,
		TradeState: o.TradeState, TradeStateDesc: tradeStateDesc[o.TradeState],
		Amount: TransactionAmount{Total: o.Amount, Currency: "CNY", PayerCurrency: "CNY"},
	}
	if o.TransactionID == "" {
		return tx
	}
	tx.TransactionID, tx.TradeType, tx.BankType = o.TransactionID, "JSAPI", "OTHERS"
	tx.SuccessTime = wechatTime(o.SuccessTime)
	tx.Payer = &Payer{OpenID: o.OpenID}
	tx.Amount.PayerTotal = o.Amount - o.Coupon
	return tx
}

// SetCoupon makes a coupon pay fen of the order (creating it as NOTPAY if
// unknown): its payer_total is then its amount less fen.
func (s *Sim) SetCoupon(outTradeNo string, amount, fen int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	o, err := s.orderLocked(outTradeNo, amount)
	if err == nil && (fen < 0 || fen > o.Amount) {
		err = fmt.Errorf("%w: coupon of %d fen on order %s of %d fen", ErrOrderState, fen, outTradeNo, o.Amount)
	}
	if err == nil {
		o.Coupon = fen
	}
	return err
}

func (s *Sim) handleQueryOrder(r *http.Request, _ []byte) reply {
	if mchid := r.URL.Query().Get("mchid"); mchid != s.keys.MchID {
		return errReply(http.StatusBadRequest, "PARAM_ERROR", "mchid 参数错误")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	o, ok := s.orders[r.PathValue("out_trade_no")]
	if !ok {
		return errReply(http.StatusNotFound, "ORDER_NOT_EXIST", "订单不存在")
	}
	return jsonReply(http.StatusOK, s.transaction(o))
}

// handleCloseOrder is WeChat Pay's close-order call: an unpaid order is
// closed (204, no body; it can no longer be paid); a closed one answers
// 400 ORDER_CLOSED, a paid one 400 ORDERPAID, an unknown one 404.
func (s *Sim) handleCloseOrder(r *http.Request, body []byte) reply {
	var req struct {
		MchID string `json:"mchid"`
	}
	if err := json.Unmarshal(body, &req); err != nil || req.MchID != s.keys.MchID {
		return errReply(http.StatusBadRequest, "PARAM_ERROR", "mchid 参数错误")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	o, ok := s.orders[r.PathValue("out_trade_no")]
	switch {
	case !ok:
		return errReply(http.StatusNotFound, "ORDER_NOT_EXIST", "订单不存在")
	case o.TradeState == TradeClosed:
		return errReply(http.StatusBadRequest, "ORDER_CLOSED", "订单已关闭")
	case o.TradeState != TradeNotPay:
		return errReply(http.StatusBadRequest, "ORDERPAID", "订单已支付")
	}
	o.TradeState = TradeClosed
	o.CloseCalls++
	return reply{status: http.StatusNoContent}
}

// newID returns a digits-long id starting with prefix, then random digits,
// then an 8-digit sequence number that keeps it unique within the simulator.
func (s *Sim) newID(prefix string, digits int) string {
	seq := s.seq.Add(1)
	r, _ := randomDigits(max(digits-len(prefix)-8, 0))
	return prefix + r + fmt.Sprintf("%08d", seq%100000000)
}
