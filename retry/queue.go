package retry

import (
	"context"
	"errors"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// ErrLeaseLost means the job's lease ran out and another worker claimed
// it: the result of this attempt is recorded but must not change the job.
var ErrLeaseLost = errors.New("retry: lease lost")

// Job is one claimed unit of work.
type Job struct {
	ID         uint64
	Kind       string
	Key        string // idempotency key of the job's effect
	OutTradeNo string
	Payload    []byte
	// Attempt is the number of this attempt, 1 for the first. An attempt
	// above 1 means an earlier one may have taken effect: handlers query
	// before they act again.
	Attempt int
	// MaybeSent: an earlier attempt may have reached the other side, so
	// its request may yet take effect. False when every earlier attempt
	// was stored as Unsent (none was, or none got that far): a decision
	// made for the first attempt, such as not acting at all, still holds.
	// An attempt that never stored its outcome (its worker died, its
	// lease ran out) counts as maybe sent.
	MaybeSent      bool
	FirstAttemptAt time.Time
	LeaseUntil     time.Time
	CreatedAt      time.Time
}

// Outcome says how an attempt ended.
type Outcome string

// Outcomes stored with each attempt.
const (
	OutcomeDone  Outcome = "done"
	OutcomeRetry Outcome = "retry"
	OutcomeDead  Outcome = "dead"
	// OutcomeSkipped finished the job without acting: its effect was no
	// longer wanted (see Skip). The job is done; Err says why.
	OutcomeSkipped Outcome = "skipped"
	// OutcomeReplayed is no attempt: a person put a dead job back in the
	// queue (Worker names who); it keeps the job's history complete.
	OutcomeReplayed Outcome = "replayed"
)

// Attempt is the record of one try of a job.
type Attempt struct {
	JobID      uint64
	Number     int
	Worker     string
	Outcome    Outcome
	Err        string
	StartedAt  time.Time
	FinishedAt time.Time
	NextRunAt  time.Time // set for OutcomeRetry
	// Unsent: the attempt failed without anything reaching the other side
	// that may take effect (see Unsent).
	Unsent bool
}

// Queue stores jobs. Every method that ends an attempt stores the attempt
// and changes the job only while worker still holds its lease, returning
// ErrLeaseLost otherwise.
type Queue interface {
	// Claim leases up to n due jobs (pending and due, or running with an
	// expired lease) to worker until now+lease, counting a new attempt on
	// each. Several workers on several hosts may claim concurrently; a job
	// goes to one of them.
	Claim(ctx context.Context, worker string, n int, lease time.Duration) ([]Job, error)
	// Complete marks the job done (a.Outcome done or skipped; a.Err says
	// why a skipped job did nothing).
	Complete(ctx context.Context, a Attempt) error
	// Retry puts the job back to run again at a.NextRunAt.
	Retry(ctx context.Context, a Attempt) error
	// Dead moves the job to the dead letters.
	Dead(ctx context.Context, a Attempt) error
}

// Releaser is an optional part of a Queue: it gives back a claimed job
// that was never attempted (the worker is shutting down), so it runs again
// at once elsewhere instead of waiting out its lease. Only the holder of
// the claim may release it.
type Releaser interface {
	Release(ctx context.Context, job Job, worker string) error
}

// Handler performs a job. A nil error completes it; Skip completes it
// without its effect; an error wrapped with Permanent dead-letters it; any
// other error retries it with backoff.
type Handler interface {
	Handle(ctx context.Context, job Job) error
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, job Job) error

// Handle implements Handler.
func (f HandlerFunc) Handle(ctx context.Context, job Job) error { return f(ctx, job) }

// Mux routes jobs to handlers by kind; an unknown kind is permanent.
type Mux map[string]Handler

// Handle implements Handler.
func (m Mux) Handle(ctx context.Context, job Job) error {
	h, ok := m[job.Kind]
	if !ok {
		return Permanent(errors.New("retry: no handler for job kind " + job.Kind))
	}
	return h.Handle(ctx, job)
}

// Permanent marks err as one that retrying cannot fix.
func Permanent(err error) error { return backoff.Permanent(err) }

// IsPermanent reports whether err was marked with Permanent.
func IsPermanent(err error) bool {
	var pe *backoff.PermanentError
	return errors.As(err, &pe)
}

// skipped is a handler's verdict that a job is finished without acting.
type skipped struct{ reason string }

func (s *skipped) Error() string { return "skipped: " + s.reason }

// Skip completes a job without its effect, because the state it was made
// for has changed (the stock of an order refunded in full before it was
// confirmed). The attempt is stored with OutcomeSkipped and the reason.
func Skip(reason string) error { return &skipped{reason: reason} }

// unsent marks a failure that sent nothing that may take effect.
type unsent struct{ err error }

func (u *unsent) Error() string { return u.err.Error() }
func (u *unsent) Unwrap() error { return u.err }

// Unsent marks a failed attempt that sent nothing that may still take
// effect: it failed before sending, or the other side refused the request
// for good. Later attempts of a job whose every attempt was Unsent are not
// MaybeSent. Unsent(nil) is nil; Permanent and Skip inside it still count.
func Unsent(err error) error {
	if err == nil {
		return nil
	}
	return &unsent{err: err}
}

// IsUnsent reports whether err was marked with Unsent.
func IsUnsent(err error) bool {
	var u *unsent
	return errors.As(err, &u)
}

// IsSkipped reports whether err is a Skip.
func IsSkipped(err error) bool {
	var s *skipped
	return errors.As(err, &s)
}
