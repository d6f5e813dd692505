package inventory

import (
	"context"
	"encoding/json"
	"fmt"

	"paygateway/retry"
)

// Jobs turns outbox jobs into inventory calls with query-before-retry:
// the first attempt sends; every later attempt first asks the service
// whether an earlier one took effect, and sends only on a clear "no".
// With Orders set, each job also reads the ledger before it acts: a
// confirmation never sent whose order was refunded in full meanwhile is
// not sent, and then neither are the order's releases.
type Jobs struct {
	Client *Client
	Orders Orders // nil: act on the job alone
}

// Orders is what the jobs read from the ledger before they act.
type Orders interface {
	// RefundedInFull: the order's refunds that succeeded cover all it was paid.
	RefundedInFull(ctx context.Context, outTradeNo string) (bool, error)
	// ConfirmationSkipped: the order's confirmation finished unsent.
	ConfirmationSkipped(ctx context.Context, outTradeNo string) (bool, error)
}

var (
	_ retry.Handler = retry.HandlerFunc((*Jobs)(nil).Confirm)
	_ retry.Handler = retry.HandlerFunc((*Jobs)(nil).Release)
)

// Confirm handles a job whose payload is a Confirmation.
func (j *Jobs) Confirm(ctx context.Context, job retry.Job) error {
	var cf Confirmation
	if err := json.Unmarshal(job.Payload, &cf); err != nil {
		return retry.Permanent(fmt.Errorf("job %d: decode confirmation: %w", job.ID, err))
	}
	if job.Attempt > 1 {
		done, err := j.Client.ConfirmationDone(ctx, cf)
		if err != nil || done {
			return classify(err)
		}
	}
	// Never sent yet: read the order now, not as it was when paid. Only
	// the first attempt may skip: after one, an earlier request may still
	// land after the query said "not applied", and a skip (with its
	// releases) is final, where sending again under the same key, then
	// releasing, nets to nothing.
	if j.Orders != nil && job.Attempt == 1 {
		refunded, err := j.Orders.RefundedInFull(ctx, cf.OutTradeNo)
		if err != nil {
			return fmt.Errorf("job %d: %w", job.ID, err)
		}
		if refunded {
			return retry.Skip("order " + cf.OutTradeNo + " was refunded in full before its stock was confirmed; not sent")
		}
	}
	return classify(j.Client.Confirm(ctx, cf))
}

// Release handles a job whose payload is a Release.
func (j *Jobs) Release(ctx context.Context, job retry.Job) error {
	var r Release
	if err := json.Unmarshal(job.Payload, &r); err != nil {
		return retry.Permanent(fmt.Errorf("job %d: decode release: %w", job.ID, err))
	}
	// A release runs only once its order's confirmation is done (the
	// outbox's claim), so this reads a final answer.
	if j.Orders != nil {
		skipped, err := j.Orders.ConfirmationSkipped(ctx, r.OutTradeNo)
		if err != nil {
			return fmt.Errorf("job %d: %w", job.ID, err)
		}
		if skipped {
			return retry.Skip("the stock of order " + r.OutTradeNo + " was never confirmed; nothing to release")
		}
	}
	if job.Attempt > 1 {
		done, err := j.Client.ReleaseDone(ctx, r)
		if err != nil || done {
			return classify(err)
		}
	}
	return classify(j.Client.Release(ctx, r))
}

// classify marks rejections as permanent; anything else (unknown
// outcomes, configuration errors) is retried, and queried first next time.
func classify(err error) error {
	if IsPermanent(err) {
		return retry.Permanent(err)
	}
	return err
}
