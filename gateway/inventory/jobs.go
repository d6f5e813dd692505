package inventory

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"paygateway/retry"
)

// Jobs turns outbox jobs into inventory calls with query-before-retry:
// the first attempt sends; every later attempt first asks the service
// whether an earlier one took effect, and sends only on a clear "no".
// With Orders set, each job also reads the ledger before it acts: a
// confirmation never sent whose order was refunded in full meanwhile is
// not sent, and then neither are the order's releases. An attempt that
// fails before sending, or whose request the service refuses for good,
// is stored as unsent (retry.Unsent), so a later one (a replay) still
// counts as never sent.
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
	// RefundedOutside: WeChat Pay said money of the order went back by no
	// refund of the gateway (REFUNDED_OUTSIDE), since confirmation job jobID
	// was last replayed.
	RefundedOutside(ctx context.Context, outTradeNo string, jobID uint64) (bool, error)
}

// errHeldOutside dead-letters a confirmation for a person to decide on;
// errHeldOutsideSent one an earlier attempt may have sent, whose request
// may yet take effect.
var (
	errHeldOutside = errors.New("held: WeChat Pay reports the order refunded outside the gateway " +
		"(anomaly REFUNDED_OUTSIDE); replay this job to confirm the stock if the order ships")
	errHeldOutsideSent = errors.New("held: WeChat Pay reports the order refunded outside the gateway " +
		"(anomaly REFUNDED_OUTSIDE); an earlier attempt may have been sent: the inventory did not have it when asked, " +
		"but it may still take effect. Replay this job if the order ships, or if the inventory has the confirmation " +
		"(the replay asks it first, and then the releases held behind it run)")
)

var (
	_ retry.Handler = retry.HandlerFunc((*Jobs)(nil).Confirm)
	_ retry.Handler = retry.HandlerFunc((*Jobs)(nil).Release)
)

// Confirm handles a job whose payload is a Confirmation.
func (j *Jobs) Confirm(ctx context.Context, job retry.Job) error {
	var cf Confirmation
	if err := json.Unmarshal(job.Payload, &cf); err != nil {
		return retry.Unsent(retry.Permanent(fmt.Errorf("job %d: decode confirmation: %w", job.ID, err)))
	}
	if job.Attempt > 1 {
		done, err := j.Client.ConfirmationDone(ctx, cf)
		if err != nil || done {
			return retry.Unsent(classify(err))
		}
	}
	if err := j.checkOrder(ctx, job, cf.OutTradeNo); err != nil {
		return retry.Unsent(err)
	}
	return sent(j.Client.Confirm(ctx, cf))
}

// checkOrder reads the order of a confirmation not in effect, before it
// is sent: now, not as it was when paid. Word of a refund outside the
// gateway (which found the job already claimed, so it could not hold it)
// dead-letters it for a person. Only a confirmation no earlier attempt
// may have sent may skip an order refunded in full by the gateway: after
// one that may have, its request may still land after the query said "not
// applied", and a skip (with its releases) is final, where sending again
// under the same key, then releasing, nets to nothing. Attempts that
// failed before sending or were refused (a dead letter replayed) do not
// count.
func (j *Jobs) checkOrder(ctx context.Context, job retry.Job, outTradeNo string) error {
	if j.Orders == nil {
		return nil
	}
	outside, err := j.Orders.RefundedOutside(ctx, outTradeNo, job.ID)
	if err != nil {
		return fmt.Errorf("job %d: %w", job.ID, err)
	}
	if outside && job.MaybeSent {
		return retry.Permanent(errHeldOutsideSent)
	}
	if outside {
		return retry.Permanent(errHeldOutside)
	}
	if job.MaybeSent {
		return nil
	}
	refunded, err := j.Orders.RefundedInFull(ctx, outTradeNo)
	if err != nil {
		return fmt.Errorf("job %d: %w", job.ID, err)
	}
	if refunded {
		return retry.Skip("order " + outTradeNo + " was refunded in full before its stock was confirmed; not sent")
	}
	return nil
}

// Release handles a job whose payload is a Release.
func (j *Jobs) Release(ctx context.Context, job retry.Job) error {
	var r Release
	if err := json.Unmarshal(job.Payload, &r); err != nil {
		return retry.Unsent(retry.Permanent(fmt.Errorf("job %d: decode release: %w", job.ID, err)))
	}
	// A release runs only once its order's confirmation is done (the
	// outbox's claim), so this reads a final answer.
	if j.Orders != nil {
		skipped, err := j.Orders.ConfirmationSkipped(ctx, r.OutTradeNo)
		if err != nil {
			return retry.Unsent(fmt.Errorf("job %d: %w", job.ID, err))
		}
		if skipped {
			return retry.Skip("the stock of order " + r.OutTradeNo + " was never confirmed; nothing to release")
		}
	}
	if job.Attempt > 1 {
		done, err := j.Client.ReleaseDone(ctx, r)
		if err != nil || done {
			return retry.Unsent(classify(err))
		}
	}
	return sent(j.Client.Release(ctx, r))
}

// sent classifies the error of a request sent: one the service refused
// for good with a 4xx (or the client refused to send) cannot take effect,
// so it is stored as unsent. Any other may have reached the service, a
// permanent one too: a 2xx whose record is not the request's says the
// service took something under the key.
func sent(err error) error {
	if !IsPermanent(err) {
		return err
	}
	var pe *PermanentError
	if errors.As(err, &pe) && (pe.Status == 0 || pe.Status/100 == 4) {
		return retry.Unsent(retry.Permanent(err))
	}
	return retry.Permanent(err)
}

// classify marks a query's rejections as permanent; anything else
// (unknown outcomes, configuration errors) is retried, and queried first
// next time.
func classify(err error) error {
	if IsPermanent(err) {
		return retry.Permanent(err)
	}
	return err
}
