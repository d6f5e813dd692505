package wxpaysim

import (
	"context"
	"io"
	"net/http"
)

// deliver POSTs n to url once and returns the answer's status (0 on a
// transport error).
func (s *Sim) deliver(ctx context.Context, n Notification, url string) (int, error) {
	resp, err := n.Post(ctx, s.client, url)
	if err != nil {
		s.log.Warn("wxpaysim: notification not delivered", "notify_id", n.ID, "event_type", n.EventType, "err", err)
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	return resp.StatusCode, nil
}

// acked reports whether WeChat Pay takes status as the merchant's receipt:
// only 200 or 204 (its notification chapter). Any other answer, a 202 or a
// 201 included, is a failure it redelivers, so the simulator must not
// count one as an ack: a merchant answering so would get every
// notification again for 24 h.
func acked(status int) bool { return status == http.StatusOK || status == http.StatusNoContent }

// notifyPayment delivers a payment notification; if the first attempt is not
// acked, it keeps redelivering in the background. It returns the first status.
func (s *Sim) notifyPayment(ctx context.Context, outTradeNo string, n Notification) int {
	status, _ := s.deliver(ctx, n, s.opts.NotifyURL)
	s.recordPaymentNotify(outTradeNo, status)
	if !acked(status) {
		s.background(func(ctx context.Context) {
			s.redeliver(ctx, n, s.opts.NotifyURL, func(status int) { s.recordPaymentNotify(outTradeNo, status) })
		})
	}
	return status
}

// redeliver re-signs and re-sends n after each retry delay until it is acked.
func (s *Sim) redeliver(ctx context.Context, n Notification, url string, record func(status int)) {
	for _, d := range s.opts.NotifyRetryDelays {
		if !s.sleep(ctx, d) {
			return
		}
		again, err := n.Resign(s.keys, s.currentSignMode(), s.now())
		if err != nil {
			s.log.Error("wxpaysim: resign notification", "notify_id", n.ID, "err", err)
			return
		}
		status, _ := s.deliver(ctx, again, url)
		record(status)
		if acked(status) {
			return
		}
	}
}

func (s *Sim) recordPaymentNotify(outTradeNo string, status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if o, ok := s.orders[outTradeNo]; ok {
		o.NotifyAttempts++
		o.NotifyStatus = status
		o.NotifyAcked = o.NotifyAcked || acked(status)
	}
}

// deliverInBackground sends n and redelivers it until acked, all in the background.
func (s *Sim) deliverInBackground(n Notification, url string, record func(status int)) {
	s.background(func(ctx context.Context) {
		status, _ := s.deliver(ctx, n, url)
		record(status)
		if !acked(status) {
			s.redeliver(ctx, n, url, record)
		}
	})
}
