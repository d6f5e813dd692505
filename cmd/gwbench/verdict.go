package main

import (
	"fmt"
	"strings"
	"time"
)

// The targets for a 2-core machine.
const (
	targetRatio   = 0.8                   // new notifications ÷ the bare-database ceiling
	targetP99     = 50 * time.Millisecond // at targetOpen, or at the ceiling's rate if lower
	targetOpen    = 5000.0                // callbacks/s offered
	targetDups    = 20000.0               // duplicates/s
	targetRefunds = 1000.0                // refund creations/s
)

// keepsUp is the share of an open loop's offered rate that counts as
// keeping up (the loop's own start and end cost a little).
const keepsUp = 0.97

// verdicts judges one backend's figures against the targets, a line each,
// and whether the ledger matched the answers. In an invalid run (a ledger
// check failed) no target is met, whatever the figures.
func verdicts(r BackendReport) []string {
	lines := []string{ratioVerdict(r.Levels), p99Verdict(r.Levels, r.Opens), dupVerdict(r.Levels), refundVerdict(r)}
	if len(r.Invalid()) > 0 {
		for i, v := range lines {
			lines[i] = "not judged, the run is invalid: " + strings.Replace(v, ": met (", ": NOT met (", 1)
		}
	}
	return append(lines, ledgerVerdict(r))
}

// ledgerVerdict says whether every ledger check passed.
func ledgerVerdict(r BackendReport) string {
	const what = "the gateway's database matches every answer"
	if len(r.Checks) == 0 {
		return what + ": not checked"
	}
	if bad := r.Invalid(); len(bad) > 0 {
		return fmt.Sprintf("%s: NOT met, the run is INVALID (%s)", what, strings.Join(bad, "; "))
	}
	return fmt.Sprintf("%s: met (%d checks passed)", what, len(r.Checks))
}

func metOrNot(ok bool) string {
	if ok {
		return "met"
	}
	return "NOT met"
}

func ratioVerdict(levels []Level) string {
	if len(levels) == 0 {
		return "new ÷ ceiling ≥ 0.8: not measured"
	}
	ok := true
	var each []string
	for _, l := range levels {
		ok = ok && l.Ratio() >= targetRatio
		each = append(each, fmt.Sprintf("%d clients %.2f", l.Concurrency, l.Ratio()))
	}
	failed := ceilingFailures(levels)
	return fmt.Sprintf("new ÷ ceiling ≥ 0.8: %s (%s)%s%s", metOrNot(ok && failed == ""), strings.Join(each, ", "),
		oneCommitRatios(levels), failed)
}

// oneCommitRatios gives, when the grouped ceiling ran, the ratios over
// one commit per notification alone, as earlier runs reported them.
func oneCommitRatios(levels []Level) string {
	var each []string
	for _, l := range levels {
		if l.Grouped.N == 0 {
			return ""
		}
		each = append(each, fmt.Sprintf("%d clients %.2f", l.Concurrency, l.OneCommitRatio()))
	}
	return "; over one commit per notification alone: " + strings.Join(each, ", ")
}

// oneCommitOpen gives the open loop run at the one-commit ceiling's
// rate, below the first one's (see benchBackend), as earlier runs judged
// the p99 at that rate.
func oneCommitOpen(levels []Level, opens []OpenRun) string {
	one := oneCommitBest(levels)
	for _, o := range opens[1:] {
		if o.Offered < opens[0].Offered && o.Offered > one-0.5 && o.Offered < one+0.5 {
			return fmt.Sprintf("; at the one-commit ceiling's rate: p99 %s at %.0f/s offered, %.0f/s done%s",
				ms(o.P99), o.Offered, o.Rate(), failNote(o.Result))
		}
	}
	return ""
}

// ceilingFailures notes the ceiling transactions that failed, of either
// ceiling. A failure lowers the ceiling, which flatters the ratio and
// lowers the rate the p99 is judged at: a target judged on such a ceiling
// is not met.
func ceilingFailures(levels []Level) string {
	var each []string
	for _, l := range levels {
		if f := l.Ceiling.Failed + l.Grouped.Failed; f > 0 {
			each = append(each, fmt.Sprintf("%d at %d clients", f, l.Concurrency))
		}
	}
	if len(each) == 0 {
		return ""
	}
	return "; ceiling transactions failed: " + strings.Join(each, ", ")
}

// p99Verdict judges the first open loop, which gwbench runs at the lower
// of -rate and the best ceiling.
func p99Verdict(levels []Level, opens []OpenRun) string {
	const what = "p99 < 50 ms at 5,000 callbacks/s offered, or at the ceiling's rate if lower"
	if len(opens) == 0 {
		return what + ": not measured"
	}
	o, best := opens[0], 0.0
	for _, l := range levels {
		best = max(best, l.CeilingRate())
	}
	failed := ceilingFailures(levels)
	ok := o.P99 < targetP99 && o.Failed == 0 && o.Rate() >= keepsUp*o.Offered && failed == ""
	line := fmt.Sprintf("%s: %s (p99 %s at %.0f/s offered, %.0f/s done%s)", what, metOrNot(ok), ms(o.P99), o.Offered, o.Rate(), failNote(o.Result))
	if o.Offered < min(targetOpen, best)-0.5 {
		line += "; offered below the target's rate (-rate)"
	}
	return line + oneCommitOpen(levels, opens) + failed
}

func dupVerdict(levels []Level) string {
	best, at := 0.0, 0
	for _, l := range levels {
		if r := l.Dup.Rate(); r > best {
			best, at = r, l.Concurrency
		}
	}
	if at == 0 {
		return "duplicates ≥ 20,000/s: not measured"
	}
	return fmt.Sprintf("duplicates ≥ 20,000/s: %s (best %.0f/s, at %d clients)", metOrNot(best >= targetDups), best, at)
}

func refundVerdict(r BackendReport) string {
	line := "refund creation ≥ 1,000/s: not measured"
	if x := r.RefundRun; x != nil {
		line = fmt.Sprintf("refund creation ≥ 1,000/s: %s (%.0f/s)%s", metOrNot(x.Failed == 0 && x.Rate() >= targetRefunds),
			x.Rate(), failNote(*x))
	}
	if x := r.RefundAtRun; x != nil {
		kept := x.Failed == 0 && x.Rate() >= keepsUp*wechatRefundRate
		verb := "kept up"
		if !kept {
			verb = "fell behind"
		}
		line += fmt.Sprintf("; at WeChat Pay's %.0f/s per merchant it %s (%.0f/s done, p99 %s%s)",
			wechatRefundRate, verb, x.Rate(), ms(x.P99), failNote(*x))
	}
	return line
}
