package main

import (
	"slices"
	"testing"
	"time"
)

// healthySoak is a 10-minute soak's samples that should pass: every 10 s
// from 10 s to 600 s (the first five in the warm-up), then a quiet one.
// The heap in use swings with GC cycles; nothing else moves.
func healthySoak() []Sample {
	var out []Sample
	for i := 1; i <= 60; i++ {
		heap := int64(30 << 20)
		if i%2 == 0 {
			heap = 58 << 20 // a sample just before a GC
		}
		out = append(out, Sample{At: time.Duration(i) * 10 * time.Second, Goroutines: 150, FDs: 80, RSS: 70 << 20,
			HeapInuse: heap, HeapGoal: 60 << 20, DBOpen: 30, DBInUse: 12, DBMax: 80, RedisConns: 7, Outbox: 8,
			Answered: 1400, Rate: 140, P99: 40 * time.Millisecond, GOGC: 400})
	}
	return append(out, Sample{At: 620 * time.Second, Quiet: true, Goroutines: 126, FDs: 79, RSS: 70 << 20,
		HeapInuse: 20 << 20, HeapGoal: 60 << 20, DBOpen: 29, DBInUse: 2, DBMax: 80, RedisConns: 7})
}

// steadyFrom applies f to each steady sample (after the 60 s warm-up),
// with its index among them.
func steadyFrom(s []Sample, f func(i int, s *Sample)) {
	i := 0
	for k := range s {
		if !s[k].Quiet && s[k].At >= time.Minute {
			f(i, &s[k])
			i++
		}
	}
}

func quiet(s []Sample) *Sample { return &s[len(s)-1] }

func TestVerdict(t *testing.T) {
	tests := []struct {
		name   string
		change func(s []Sample) []Sample
		failed []string // the checks that must fail, and no other
	}{
		{"healthy", func(s []Sample) []Sample { return s }, nil},
		{"goroutine leak: 2 a second stay after the load", func(s []Sample) []Sample {
			quiet(s).Goroutines = 150 + 2*540
			return s
		}, []string{"goroutines back after the load"}},
		{"goroutines a few above the baseline pass", func(s []Sample) []Sample {
			quiet(s).Goroutines = 165
			return s
		}, nil},
		{"fds growing", func(s []Sample) []Sample {
			steadyFrom(s, func(i int, s *Sample) { s.FDs = 80 + i })
			quiet(s).FDs = 80 + 60
			return s
		}, []string{"open fds back after the load"}},
		{"heap climbing steadily", func(s []Sample) []Sample {
			steadyFrom(s, func(i int, s *Sample) { s.HeapGoal = (60 + int64(i)) << 20 })
			return s
		}, []string{"heap not climbing"}},
		// The gate gains 1,000 entries a sample, each 200 bytes live: the
		// goal grows by 5 × that at GOGC=400, bounded by the gate's size.
		{"heap growing with the gate's entries passes", func(s []Sample) []Sample {
			steadyFrom(s, func(i int, s *Sample) {
				s.GateEntries = 1000 * i
				s.HeapGoal = 60<<20 + int64(s.GateEntries)*200*5
			})
			return s
		}, nil},
		{"heap growing past what the gate's entries explain", func(s []Sample) []Sample {
			steadyFrom(s, func(i int, s *Sample) {
				s.GateEntries = 1000 * i
				s.HeapGoal = 60<<20 + int64(s.GateEntries)*600*5
			})
			return s
		}, []string{"heap not climbing"}},
		{"one heap spike in the last third passes", func(s []Sample) []Sample {
			steadyFrom(s, func(i int, s *Sample) {
				if i == 50 {
					s.HeapGoal = 200 << 20
				}
			})
			return s
		}, nil},
		{"p99 tripling", func(s []Sample) []Sample {
			steadyFrom(s, func(i int, s *Sample) { s.P99 = 40*time.Millisecond + time.Duration(i)*80*time.Millisecond/54 })
			return s
		}, []string{"notification p99 not climbing"}},
		{"p99 of a few ms rising by 3 ms passes", func(s []Sample) []Sample {
			steadyFrom(s, func(i int, s *Sample) {
				s.P99 = 3 * time.Millisecond
				if i >= 36 {
					s.P99 = 6 * time.Millisecond
				}
			})
			return s
		}, nil},
		{"no notification answered at the end", func(s []Sample) []Sample {
			steadyFrom(s, func(i int, s *Sample) {
				if i >= 36 {
					s.P99, s.Answered, s.Rate = 0, 0, 0
				}
			})
			return s
		}, []string{"notification p99 not climbing"}},
		{"database connections over the cap", func(s []Sample) []Sample {
			s[30].DBOpen = 81
			return s
		}, []string{"database connections within the pools"}},
		{"database connections held after the load", func(s []Sample) []Sample {
			quiet(s).DBInUse = 20
			return s
		}, []string{"database connections within the pools"}},
		{"Redis connections past the pool", func(s []Sample) []Sample {
			s[40].RedisConns = 21
			return s
		}, []string{"Redis connections within the pool"}},
		{"Redis connections left open after the load", func(s []Sample) []Sample {
			quiet(s).RedisConns = 15
			return s
		}, []string{"Redis connections within the pool"}},
		{"outbox backing up", func(s []Sample) []Sample {
			steadyFrom(s, func(i int, s *Sample) { s.Outbox = 8 + 20*i })
			return s
		}, []string{"outbox not backing up"}},
		{"outbox not drained", func(s []Sample) []Sample {
			quiet(s).Outbox = 3
			return s
		}, []string{"outbox not backing up"}},
		{"warm-up samples do not count", func(s []Sample) []Sample {
			s[0].HeapGoal, s[1].P99, s[2].Outbox = 1, time.Millisecond, 5000
			return s
		}, nil},
		{"no quiet sample", func(s []Sample) []Sample { return s[:len(s)-1] }, []string{"samples"}},
		{"too few steady samples", func(s []Sample) []Sample {
			return append(s[:7], *quiet(s))
		}, []string{"samples"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var failed []string
			checks := Verdict(tc.change(healthySoak()), time.Minute, 20)
			for _, c := range checks {
				if !c.OK {
					failed = append(failed, c.Name)
				}
			}
			if !slices.Equal(failed, tc.failed) {
				for _, c := range checks {
					t.Logf("%s: %v, %s", c.Name, c.OK, c.Detail)
				}
				t.Fatalf("failed checks %q, want %q", failed, tc.failed)
			}
		})
	}
}
