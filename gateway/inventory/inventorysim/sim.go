// Package inventorysim is an in-process inventory service for tests and chaos
// runs. It implements the inventory contract (idempotent confirmations and
// releases keyed by Idempotency-Key), injects faults on demand, and counts
// every application so an invariant checker can prove "exactly once per key".
package inventorysim

import (
	"sync"
	"time"
)

// Sim is the simulated inventory service. It is safe for concurrent use.
type Sim struct {
	mu       sync.Mutex
	faults   Faults
	stats    Stats
	confirms *book[confirmRequest, ConfirmationRecord]
	releases *book[releaseRequest, ReleaseRecord]
	now      func() time.Time
}

// Stats are running totals since New or Reset.
type Stats struct {
	Confirmations int `json:"confirmations"` // confirmations applied
	Releases      int `json:"releases"`      // releases applied
	Posts         int `json:"posts"`         // contract POSTs received
	Gets          int `json:"gets"`          // contract GETs received
	Duplicates    int `json:"duplicates"`    // replays answered with the stored record
	Mismatches    int `json:"mismatches"`    // same key, different body (409)
	Invalid       int `json:"invalid"`       // rejected bodies (400)
	Faults        int `json:"faults"`        // faults injected, all kinds
	Unconfirmed   int `json:"unconfirmed"`   // releases applied for an order not confirmed (yet): a contract breach

	Errors            int `json:"errors"`              // injected 500s
	Drops             int `json:"drops"`               // connections closed before applying
	ApplyThenTimeouts int `json:"apply_then_timeouts"` // applied, then stalled or dropped
	Permanents        int `json:"permanents"`          // injected 422s
}

// New returns an empty simulator with no faults.
func New() *Sim {
	s := &Sim{now: func() time.Time { return time.Now().UTC() }}
	s.Reset()
	return s
}

// Reset forgets every record, fault and statistic.
func (s *Sim) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = Faults{}
	s.stats = Stats{}
	s.confirms = newBook[confirmRequest, ConfirmationRecord]()
	s.releases = newBook[releaseRequest, ReleaseRecord]()
}

// SetFaults replaces the faults to inject. Check them with Faults.Validate
// first; the /sim/faults endpoint does.
func (s *Sim) SetFaults(f Faults) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = f
}

// Faults returns the faults in force, with Next counters as consumed so far.
func (s *Sim) Faults() Faults {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.faults
}

// ConfirmCount returns how many distinct confirmations were applied for the order.
func (s *Sim) ConfirmCount(outTradeNo string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.confirms.perOrder[outTradeNo]
}

// ReleaseCount returns how many distinct releases were applied for the order.
func (s *Sim) ReleaseCount(outTradeNo string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.releases.perOrder[outTradeNo]
}

// AppliedByKey returns how many times key was applied, as a confirmation or
// a release. Anything above 1 breaks the contract.
func (s *Sim) AppliedByKey(key string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.confirms.perKey[key] + s.releases.perKey[key]
}

// ResentBlind returns, by key, how many writes (confirmations and
// releases that reached the service) were sent again without a query of
// the key answered "not found" before them: a key sent n times after m
// such answers counts n-1-m when that is positive. A client that keeps
// "query before you retry" has none, even when a stale first send lands
// after the query; the dedup hides a blind resend's effect, this does
// not. A write refused by an injected fault before it was read does not
// count as sent.
func (s *Sim) ResentBlind() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]int{}
	s.confirms.resentBlind(out)
	s.releases.resentBlind(out)
	return out
}

// Confirmations lists every confirmation held, oldest first, with Applied set.
func (s *Sim) Confirmations() []ConfirmationRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.confirms.list()
}

// Releases lists every release held, oldest first, with Applied set.
func (s *Sim) Releases() []ReleaseRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.releases.list()
}

// Stats returns the running totals.
func (s *Sim) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// begin counts a contract request and picks its fault plan.
func (s *Sim) begin(write bool) plan {
	s.mu.Lock()
	defer s.mu.Unlock()
	if write {
		s.stats.Posts++
	} else {
		s.stats.Gets++
	}
	p := s.faults.decide(write)
	s.stats.countFault(p.action)
	return p
}

func (st *Stats) countFault(a action) {
	switch a {
	case actNone:
		return
	case actError:
		st.Errors++
	case actDrop:
		st.Drops++
	case actApplyThenTimeout:
		st.ApplyThenTimeouts++
	case actPermanent:
		st.Permanents++
	}
	st.Faults++
}

// countOutcome updates the totals after a write; kind is Confirmations or Releases.
func (st *Stats) countOutcome(o outcome, kind *int) {
	switch o {
	case applied:
		*kind++
	case duplicate:
		st.Duplicates++
	case mismatch:
		st.Mismatches++
	}
}

func (s *Sim) countInvalid() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stats.Invalid++
}
