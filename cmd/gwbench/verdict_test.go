package main

import (
	"strings"
	"testing"
	"time"
)

// at is a result of n operations in one second with the given p99.
func at(n int, p99 time.Duration) Result {
	return Result{N: n, Elapsed: time.Second, P99: p99}
}

func TestVerdictsJudgeEachTarget(t *testing.T) {
	slow := at(150, 5*time.Second)
	slow.Elapsed = 1470 * time.Millisecond // 102/s done of 150/s offered
	refunds := at(256, time.Second)
	tests := []struct {
		name string
		rep  BackendReport
		want []string
	}{{
		name: "some met",
		rep: BackendReport{
			Levels: []Level{
				{Concurrency: 8, New: at(2023, 0), Ceiling: at(2200, 0), Dup: at(12395, 0)},
				{Concurrency: 128, New: at(5888, 0), Ceiling: at(2105, 0), Dup: at(20500, 0)},
			},
			Opens:       []OpenRun{{Offered: 2200, Result: at(2195, 28500*time.Microsecond)}},
			RefundRun:   &refunds,
			RefundAtRun: &Result{N: 150, Elapsed: time.Second, P99: 14 * time.Millisecond},
			Checks:      []Check{{Name: "8 clients"}, {Name: "128 clients"}},
		},
		want: []string{
			"new ÷ ceiling ≥ 0.8: met (8 clients 0.92, 128 clients 2.80)",
			"p99 < 50 ms at 5,000 callbacks/s offered, or at the ceiling's rate if lower: met (p99 28.5ms at 2200/s offered, 2195/s done)",
			"duplicates ≥ 20,000/s: met (best 20500/s, at 128 clients)",
			"refund creation ≥ 1,000/s: NOT met (256/s); at WeChat Pay's 150/s per merchant it kept up (150/s done, p99 14.0ms)",
			"the gateway's database matches every answer: met (2 checks passed)",
		},
	}, {
		name: "none met",
		rep: BackendReport{
			Levels:      []Level{{Concurrency: 8, New: at(1700, 0), Ceiling: at(3000, 0), Dup: at(14000, 0)}},
			Opens:       []OpenRun{{Offered: 2000, Result: at(2000, 60*time.Millisecond)}},
			RefundAtRun: &slow,
		},
		want: []string{
			"new ÷ ceiling ≥ 0.8: NOT met (8 clients 0.57)",
			"p99 < 50 ms at 5,000 callbacks/s offered, or at the ceiling's rate if lower: NOT met (p99 60.0ms at 2000/s offered, 2000/s done); offered below the target's rate (-rate)",
			"duplicates ≥ 20,000/s: NOT met (best 14000/s, at 8 clients)",
			"refund creation ≥ 1,000/s: not measured; at WeChat Pay's 150/s per merchant it fell behind (102/s done, p99 5000.0ms)",
			"the gateway's database matches every answer: not checked",
		},
	}, {
		name: "nothing measured",
		rep:  BackendReport{},
		want: []string{
			"new ÷ ceiling ≥ 0.8: not measured",
			"p99 < 50 ms at 5,000 callbacks/s offered, or at the ceiling's rate if lower: not measured",
			"duplicates ≥ 20,000/s: not measured",
			"refund creation ≥ 1,000/s: not measured",
			"the gateway's database matches every answer: not checked",
		},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := verdicts(tc.rep)
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("verdicts:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
}

// TestFailuresAreNotMet: refund creations that failed, or ceiling
// transactions that failed (a lower ceiling flatters the ratio and the
// rate the p99 is judged at), miss the target whatever the figures.
func TestFailuresAreNotMet(t *testing.T) {
	refunds := at(5000, 0)
	refunds.Failed, refunds.FirstErr = 3, "status 503"
	if v := refundVerdict(BackendReport{RefundRun: &refunds}); !strings.HasPrefix(v, "refund creation ≥ 1,000/s: NOT met (") ||
		!strings.Contains(v, "3 failed: status 503") {
		t.Errorf("5,000/s with 3 failed: %q, want NOT met naming the failures", v)
	}
	ceiling := at(1000, 0)
	ceiling.Failed = 2
	levels := []Level{{Concurrency: 8, New: at(2000, 0), Ceiling: ceiling}}
	opens := []OpenRun{{Offered: 1000, Result: at(1000, 10*time.Millisecond)}}
	for _, v := range []string{ratioVerdict(levels), p99Verdict(levels, opens)} {
		if !strings.Contains(v, ": NOT met (") || !strings.HasSuffix(v, "; ceiling transactions failed: 2 at 8 clients") {
			t.Errorf("judged on a ceiling with 2 failures: %q, want NOT met naming them", v)
		}
	}
}

// TestSlowOpenLoopIsNotMet: an open loop that fell behind the offered
// rate misses the target whatever its p99.
func TestSlowOpenLoopIsNotMet(t *testing.T) {
	open := OpenRun{Offered: 5000, Result: at(4200, 40*time.Millisecond)}
	levels := []Level{{Concurrency: 8, Ceiling: at(6000, 0)}}
	if v := p99Verdict(levels, []OpenRun{open}); !strings.Contains(v, "NOT met") {
		t.Errorf("4,200 of 5,000/s done: %q, want NOT met", v)
	}
}

// TestInvalidRunMeetsNothing: when a ledger check failed, figures that
// would meet every target meet none, and the ledger line names the
// problem.
func TestInvalidRunMeetsNothing(t *testing.T) {
	fast := at(100000, time.Millisecond)
	rep := BackendReport{
		Levels:      []Level{{Concurrency: 8, New: fast, Ceiling: at(1000, 0), Dup: fast}},
		Opens:       []OpenRun{{Offered: 1000, Result: at(1000, time.Millisecond)}},
		RefundRun:   &fast,
		RefundAtRun: &Result{N: 150, Elapsed: time.Second},
		Checks: []Check{{Name: "8 clients"},
			{Name: "32 clients", Problems: []string{"3 orders answered 2xx have no rows (first: Bm032-0000007)"}}},
	}
	got := verdicts(rep)
	for _, v := range got {
		if strings.Contains(v, ": met") {
			t.Errorf("invalid run judged met: %q", v)
		}
	}
	last := got[len(got)-1]
	if !strings.Contains(last, "NOT met, the run is INVALID (32 clients: 3 orders answered 2xx have no rows") {
		t.Errorf("ledger verdict %q", last)
	}
}
