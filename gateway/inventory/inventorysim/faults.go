package inventorysim

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"
)

// DefaultApplyThenTimeoutDelay is how long an ApplyThenTimeout answer stalls
// when Faults.ApplyThenTimeoutDelay is zero: longer than any sane client timeout.
const DefaultApplyThenTimeoutDelay = 10 * time.Second

// Scopes for Faults.Only.
const (
	OnlyWrites = "writes" // POSTs only; the default ("")
	OnlyReads  = "reads"  // GETs only
	OnlyAll    = "all"    // POSTs and GETs
)

// Faults says which failures the simulator injects. Control endpoints under
// /sim/ are never faulted. A "Next" counter wins over the rates; counters are
// consumed in the order Permanent, Fail, Drop, ApplyThenTimeout. Rates are
// drawn once per request, so they must add up to at most 1.
type Faults struct {
	// ErrorRate and FailNext answer 500 without applying.
	ErrorRate float64 `json:"error_rate"`
	FailNext  int     `json:"fail_next"`
	// Latency delays every request in scope before it is handled. A request
	// whose client gives up meanwhile is not applied.
	Latency time.Duration `json:"latency"`
	// DropRate and DropNext close the connection without applying or answering.
	DropRate float64 `json:"drop_rate"`
	DropNext int     `json:"drop_next"`
	// ApplyThenTimeoutRate and ApplyThenTimeoutNext apply the request, then
	// stall ApplyThenTimeoutDelay before answering (ending early, with the
	// connection closed, if the client leaves), or close the connection at
	// once when ApplyThenDrop is set.
	ApplyThenTimeoutRate  float64       `json:"apply_then_timeout_rate"`
	ApplyThenTimeoutNext  int           `json:"apply_then_timeout_next"`
	ApplyThenTimeoutDelay time.Duration `json:"apply_then_timeout_delay"`
	ApplyThenDrop         bool          `json:"apply_then_drop"`
	// PermanentNext answers 422 without applying, for dead-letter tests.
	PermanentNext int `json:"permanent_next"`
	// Only picks the requests faults hit: OnlyWrites (default), OnlyReads, OnlyAll.
	Only string `json:"only"`
}

// Validate reports a fault setting the simulator cannot honour.
func (f Faults) Validate() error {
	rates := []float64{f.ErrorRate, f.DropRate, f.ApplyThenTimeoutRate}
	sum := 0.0
	for _, r := range rates {
		if r < 0 || r > 1 {
			return fmt.Errorf("fault rate %v outside [0, 1]", r)
		}
		sum += r
	}
	switch {
	case sum > 1:
		return fmt.Errorf("fault rates add up to %v, more than 1", sum)
	case f.FailNext < 0 || f.DropNext < 0 || f.ApplyThenTimeoutNext < 0 || f.PermanentNext < 0:
		return errors.New("negative fault counter")
	case f.Latency < 0 || f.ApplyThenTimeoutDelay < 0:
		return errors.New("negative fault duration")
	case f.Only != "" && f.Only != OnlyWrites && f.Only != OnlyReads && f.Only != OnlyAll:
		return fmt.Errorf("only %q: want %q, %q or %q", f.Only, OnlyWrites, OnlyReads, OnlyAll)
	}
	return nil
}

// MarshalJSON writes durations as Go duration strings ("250ms").
func (f Faults) MarshalJSON() ([]byte, error) {
	type plain Faults
	return json.Marshal(struct {
		plain
		Latency               jsonDuration `json:"latency"`
		ApplyThenTimeoutDelay jsonDuration `json:"apply_then_timeout_delay"`
	}{plain(f), jsonDuration(f.Latency), jsonDuration(f.ApplyThenTimeoutDelay)})
}

// UnmarshalJSON accepts durations as strings ("250ms") or nanoseconds, and
// rejects unknown fields so a typo in a chaos script does not pass silently.
func (f *Faults) UnmarshalJSON(b []byte) error {
	type plain Faults
	aux := struct {
		*plain
		Latency               jsonDuration `json:"latency"`
		ApplyThenTimeoutDelay jsonDuration `json:"apply_then_timeout_delay"`
	}{(*plain)(f), jsonDuration(f.Latency), jsonDuration(f.ApplyThenTimeoutDelay)}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&aux); err != nil {
		return fmt.Errorf("decode faults: %w", err)
	}
	f.Latency = time.Duration(aux.Latency)
	f.ApplyThenTimeoutDelay = time.Duration(aux.ApplyThenTimeoutDelay)
	return nil
}

type jsonDuration time.Duration

func (d jsonDuration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

func (d *jsonDuration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		n, err := strconv.ParseInt(string(b), 10, 64)
		if err != nil {
			return fmt.Errorf("duration %s: want a string like \"250ms\" or nanoseconds", b)
		}
		*d = jsonDuration(n)
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration %q: %w", s, err)
	}
	*d = jsonDuration(v)
	return nil
}

// action is the fault chosen for one request.
type action int

const (
	actNone action = iota
	actError
	actDrop
	actApplyThenTimeout
	actPermanent
)

// plan is what the handler does to one request.
type plan struct {
	action         action
	latency        time.Duration
	delay          time.Duration
	dropAfterApply bool
}

// decide picks the plan for a request, consuming a Next counter if one is
// set. The caller holds the simulator's lock.
func (f *Faults) decide(write bool) plan {
	if !f.hits(write) {
		return plan{}
	}
	p := plan{latency: f.Latency, delay: f.ApplyThenTimeoutDelay, dropAfterApply: f.ApplyThenDrop}
	if p.delay == 0 {
		p.delay = DefaultApplyThenTimeoutDelay
	}
	if p.action = f.next(); p.action == actNone {
		p.action = f.draw()
	}
	return p
}

func (f *Faults) hits(write bool) bool {
	switch f.Only {
	case OnlyAll:
		return true
	case OnlyReads:
		return !write
	default:
		return write
	}
}

func (f *Faults) next() action {
	switch {
	case f.PermanentNext > 0:
		f.PermanentNext--
		return actPermanent
	case f.FailNext > 0:
		f.FailNext--
		return actError
	case f.DropNext > 0:
		f.DropNext--
		return actDrop
	case f.ApplyThenTimeoutNext > 0:
		f.ApplyThenTimeoutNext--
		return actApplyThenTimeout
	}
	return actNone
}

// draw splits one uniform draw over the rates, so each rate is exact.
func (f *Faults) draw() action {
	r := rand.Float64()
	switch {
	case r < f.ErrorRate:
		return actError
	case r < f.ErrorRate+f.DropRate:
		return actDrop
	case r < f.ErrorRate+f.DropRate+f.ApplyThenTimeoutRate:
		return actApplyThenTimeout
	}
	return actNone
}
