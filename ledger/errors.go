package ledger

import (
	"errors"
	"fmt"
	"strings"
)

// Errors the ledger returns; each method's doc says which.
var (
	// ErrNotFound means no record has the given key.
	ErrNotFound = errors.New("ledger: not found")
	// ErrAlreadyRecorded means the same fact is already in the ledger;
	// callers answer a replay as a success.
	ErrAlreadyRecorded = errors.New("ledger: already recorded")
	// ErrIllegalTransition means the state machine refuses the change.
	ErrIllegalTransition = errors.New("ledger: illegal state transition")
	// ErrConflict means a record exists under the key with other values.
	ErrConflict = errors.New("ledger: conflicting record")
	// ErrNoChange means the update carries nothing the state machine acts on
	// (for example an order WeChat Pay still reports as NOTPAY).
	ErrNoChange = errors.New("ledger: nothing to change")
	// ErrRefundWaits means a refund was not sent: its order's last refund
	// application went out less than the gap ago (CountRefundAttempt).
	ErrRefundWaits = errors.New("ledger: refund waits for the gap after its order's last application")
	// ErrClaimed means another run holds the lease on the work (a day's
	// reconciliation), or took it over: try again when that run ends.
	ErrClaimed = errors.New("ledger: claimed by another run")
	// ErrStale means the record changed since the version the caller
	// acted on: read it again and decide again.
	ErrStale = errors.New("ledger: changed since it was read")
)

// ErrReleaseWaits means a release held behind its order's stock
// confirmation was asked to be replayed before that confirmation is
// done: replay the confirmation first. It is an ErrConflict.
var ErrReleaseWaits = fmt.Errorf("ledger: the release waits for its order's confirmation: %w", ErrConflict)

// AmountMismatchError reports a paid amount that differs from the amount
// the business registered for the order.
type AmountMismatchError struct {
	OutTradeNo string
	Expected   int64
	Got        int64
	// Currency, when set, is a currency other than the ledger's CNY that
	// WeChat Pay stated: the amounts are not comparable.
	Currency string
}

func (e *AmountMismatchError) Error() string {
	if e.Currency != "" {
		return fmt.Sprintf("ledger: currency mismatch for %s: %d paid in %q, the ledger keeps CNY", e.OutTradeNo, e.Got, e.Currency)
	}
	return fmt.Sprintf("ledger: amount mismatch for %s: expected %d fen, got %d fen", e.OutTradeNo, e.Expected, e.Got)
}

// IllegalTransitionError names the refused change; it matches
// ErrIllegalTransition with errors.Is.
type IllegalTransitionError struct {
	Entity, Key, From, To string
}

func (e *IllegalTransitionError) Error() string {
	return fmt.Sprintf("ledger: %s %s cannot go from %q to %q", e.Entity, e.Key, e.From, e.To)
}

// Is lets errors.Is(err, ErrIllegalTransition) match.
func (e *IllegalTransitionError) Is(target error) bool { return target == ErrIllegalTransition }

// UnindexedFilterError refuses a list query that no index serves: its
// filter, on its own, makes the database read the table in id order, all
// of it when few rows or none match.
type UnindexedFilterError struct {
	List, Filter string
	// Unplaced: the filter is a key the ledger could place in an order
	// (an indexed read), but no payment, refund or flag has this one.
	Unplaced bool
	// Need lists the filters any one of which, given with it, lets an
	// index bound the read.
	Need []string
}

func (e *UnindexedFilterError) Error() string {
	why := "no index serves " + e.Filter
	if e.Unplaced {
		why = "no order has this " + e.Filter
	}
	return fmt.Sprintf("ledger: list %s: %s; give %s with it", e.List, why, strings.Join(e.Need, " or "))
}
