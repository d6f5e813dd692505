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
type Jobs struct{ Client *Client }

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
	return classify(j.Client.Confirm(ctx, cf))
}

// Release handles a job whose payload is a Release.
func (j *Jobs) Release(ctx context.Context, job retry.Job) error {
	var r Release
	if err := json.Unmarshal(job.Payload, &r); err != nil {
		return retry.Permanent(fmt.Errorf("job %d: decode release: %w", job.ID, err))
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
