// Package retry runs background jobs that must eventually succeed: a pool
// of workers claims due jobs from a Queue under a lease, hands them to a
// Handler and stores each outcome, so retries survive restarts and a
// crashed worker's job is picked up again when its lease runs out.
//
// It imports no package of this module: the ledger implements Queue and
// adapters implement Handler.
package retry

import (
	"math/rand/v2"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// Policy is an exponential backoff with jitter.
type Policy struct {
	Initial    time.Duration // delay after the first failed attempt
	Max        time.Duration // cap on any one delay, jitter included
	MaxElapsed time.Duration // give up (dead-letter) this long after the first attempt
	Multiplier float64       // growth per attempt; default 1.5 (backoff's)
	Jitter     float64       // randomization factor in [0, 1): delay ± Jitter·delay, then capped; default 0.5
}

// withDefaults fills zero fields with backoff's defaults.
func (p Policy) withDefaults() Policy {
	if p.Initial <= 0 {
		p.Initial = backoff.DefaultInitialInterval
	}
	if p.Max <= 0 {
		p.Max = backoff.DefaultMaxInterval
	}
	if p.MaxElapsed <= 0 {
		p.MaxElapsed = backoff.DefaultMaxElapsedTime
	}
	// Written so that NaN (which strconv.ParseFloat accepts, and which
	// fails no comparison) gets the default too: a NaN jitter made every
	// delay negative, and the job was retried at once, in a loop.
	if !(p.Multiplier >= 1) {
		p.Multiplier = backoff.DefaultMultiplier
	}
	if !(p.Jitter >= 0 && p.Jitter < 1) {
		p.Jitter = backoff.DefaultRandomizationFactor
	}
	return p
}

// NextDelay returns how long to wait after failed attempt number attempt
// (1 for the first). It depends on nothing but the policy and the attempt
// number (and the random jitter), so a job's schedule survives restarts:
// the attempt count is stored with the job. The result lies in [0, Max]:
// backoff adds its jitter after its own cap (up to Max·(1+Jitter)), and
// past 290 years the jittered value wraps negative, which would make the
// job due at once, retried in a loop. A delay past the cap is drawn from
// [Max·(1−Jitter), Max] instead.
func (p Policy) NextDelay(attempt int) time.Duration {
	p = p.withDefaults()
	b := &backoff.ExponentialBackOff{
		InitialInterval:     p.Initial,
		RandomizationFactor: 0, // first the interval itself
		Multiplier:          p.Multiplier,
		MaxInterval:         p.Max,
		MaxElapsedTime:      0, // the pool checks elapsed time against the stored first attempt
		Stop:                backoff.Stop,
		Clock:               backoff.SystemClock,
	}
	b.Reset()
	// Step until the attempt's interval or the cap: a fixed bound on the
	// steps (there was one of 64) left a gentle multiplier's delay far
	// below the cap for good (1.05: 22 initial intervals).
	interval := b.NextBackOff()
	for i := 1; i < attempt && interval < p.Max; i++ {
		next := b.NextBackOff()
		if next == interval { // multiplier 1, or too small to move it
			break
		}
		interval = next
	}
	b.InitialInterval, b.RandomizationFactor = interval, p.Jitter
	b.Reset()
	d := b.NextBackOff()
	if d < 0 || d > p.Max {
		// Jitter below the cap, so that jobs at the cap stay spread out.
		return p.Max - time.Duration(rand.Float64()*p.Jitter*float64(p.Max))
	}
	return d
}
