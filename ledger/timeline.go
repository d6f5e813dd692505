package ledger

import (
	"context"
	"fmt"
	"sort"
	"time"
)

// Timeline event types.
const (
	EventTransition   = "transition"
	EventNotification = "notification"
	EventRefund       = "refund"
	EventOutboxJob    = "outbox_job"
	EventAnomaly      = "anomaly"
)

// TimelineEvent is one thing that happened to an order.
type TimelineEvent struct {
	At      time.Time `json:"at"`
	Type    string    `json:"type"`
	Key     string    `json:"key"`     // notify id, out_refund_no, job key, …
	Summary string    `json:"summary"` // one human-readable line
	Detail  any       `json:"detail"`
}

// Timeline lists every state transition, notification, refund, downstream
// job and anomaly of an order in time order (ties keep that order).
func (s *Store) Timeline(ctx context.Context, outTradeNo string) ([]TimelineEvent, error) {
	var out []TimelineEvent
	add := func(e TimelineEvent) { out = append(out, e) }
	history, err := s.History(ctx, outTradeNo)
	if err != nil {
		return nil, err
	}
	for _, h := range history {
		add(TimelineEvent{At: h.CreatedAt, Type: EventTransition, Key: h.Entity + ":" + h.EntityKey,
			Summary: fmt.Sprintf("%s %s → %s (%s)", h.Entity, orNone(h.From), h.To, h.Source), Detail: h})
	}
	q := ListQuery{OutTradeNo: outTradeNo}
	err = s.EachNotice(ctx, q, func(n NoticeListItem) error {
		add(TimelineEvent{At: n.ReceivedAt, Type: EventNotification, Key: n.NotifyID,
			Summary: fmt.Sprintf("%s %s via %s", n.EventType, n.Summary, n.Source), Detail: n})
		return nil
	})
	if err != nil {
		return nil, err
	}
	err = s.EachRefund(ctx, q, func(r RefundListItem) error {
		add(TimelineEvent{At: r.CreatedAt, Type: EventRefund, Key: r.OutRefundNo,
			Summary: fmt.Sprintf("refund %s of %d fen requested by %s, now %s", r.OutRefundNo, r.Amount, r.Requester, r.State), Detail: r})
		return nil
	})
	if err != nil {
		return nil, err
	}
	err = s.EachOutboxJob(ctx, q, func(j OutboxJobListItem) error {
		add(TimelineEvent{At: j.CreatedAt, Type: EventOutboxJob, Key: j.JobKey,
			Summary: fmt.Sprintf("%s job, %s after %d attempts", j.Kind, j.State, j.Attempts), Detail: j})
		return nil
	})
	if err != nil {
		return nil, err
	}
	anomalies, err := s.Anomalies(ctx, outTradeNo)
	if err != nil {
		return nil, err
	}
	for _, a := range anomalies {
		add(TimelineEvent{At: a.FirstSeen, Type: EventAnomaly, Key: a.Kind + ":" + a.Ref,
			Summary: fmt.Sprintf("%s seen %d times: %s", a.Kind, a.SeenCount, a.Detail), Detail: a})
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].At.Before(out[j].At) })
	return out, nil
}

func orNone(state string) string {
	if state == "" {
		return "(none)"
	}
	return state
}
