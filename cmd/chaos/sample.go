package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"paygateway/cmd/internal/stack"
)

// Sample is one reading of the gateway during a soak: its process (from
// its /metrics), its connections, its outbox and the latency the driver
// saw in the window since the previous sample.
type Sample struct {
	At         time.Duration // since the load started
	Quiet      bool          // taken after the load stopped and the outbox drained
	Goroutines int
	FDs        int
	RSS        int64 // bytes
	HeapInuse  int64 // bytes; swings with each GC cycle
	// HeapGoal is the GC's target, set at the end of each cycle from the
	// live heap (twice it at GOGC=100): unlike HeapInuse it does not
	// depend on where in a cycle the sample fell.
	HeapGoal int64
	// GateEntries is what the gateway's in-process gate holds (nonces,
	// committed notification ids): bounded, but growing through the first
	// 15-25 minutes of a soak, and the heap with it. GOGC sets how much
	// of the heap goal each live byte accounts for.
	GateEntries int
	GOGC        int
	DBOpen      int // both pools (ledger, ledger_notify)
	DBInUse     int
	DBMax       int // the pools' caps
	RedisConns  int // the private Redis's clients, the sampler's own left out
	Outbox      int // outbox jobs not DONE (the gateway reads them at most every 10 s)
	Answered    int // payment notification POSTs answered in the window
	Rate        float64
	P99         time.Duration // of those POSTs
	// GatewayCPU (cores the gateway used) and Busy (the share of the
	// machine's cores busy, with everything else it runs) over the window
	// tell a gateway that got costlier from a machine that got crowded.
	GatewayCPU float64
	Busy       float64
}

// latencies collects the driver's payment notification POST times until
// the sampler takes them.
type latencies struct {
	mu sync.Mutex
	d  []time.Duration
}

// add is a no-op on a nil receiver: a chaos run does not measure.
func (l *latencies) add(d time.Duration) {
	if l == nil {
		return
	}
	l.mu.Lock()
	l.d = append(l.d, d)
	l.mu.Unlock()
}

func (l *latencies) take() []time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.d
	l.d = nil
	return out
}

// p99 is the 99th percentile of d (0 for none).
func p99(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[(len(s)*99+99)/100-1]
}

// sampler scrapes the gateway's /metrics (with the ops key: on the main
// port it takes one) and asks the private Redis how many clients it has.
type sampler struct {
	w      *world
	lat    *latencies
	client *http.Client
	start  time.Time
	last   time.Time
	// The gateway's CPU time and the machine's idle and total jiffies at
	// the last sample.
	cpu         time.Duration
	idle, total int64
	// samples and errs belong to the goroutine taking the samples until
	// the load has stopped.
	samples []Sample
	errs    []string
}

func newSampler(w *world, lat *latencies, start time.Time) *sampler {
	s := &sampler{w: w, lat: lat, client: &http.Client{Timeout: 10 * time.Second}, start: start, last: start}
	s.cpu, _ = stack.CPUTime(w.gw.PID())
	s.idle, s.total = stack.MachineIdle()
	return s
}

// cpuSince sets smp's CPU figures for the window since the last sample.
func (s *sampler) cpuSince(smp *Sample, window time.Duration) {
	cpu, err := stack.CPUTime(s.w.gw.PID())
	if err == nil {
		smp.GatewayCPU = float64(cpu-s.cpu) / float64(window)
		s.cpu = cpu
	}
	idle, total := stack.MachineIdle()
	if total > s.total {
		smp.Busy = 1 - float64(idle-s.idle)/float64(total-s.total)
	}
	s.idle, s.total = idle, total
}

// run samples every interval until ctx ends.
func (s *sampler) run(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.take(context.WithoutCancel(ctx), false)
		}
	}
}

// take adds a sample, or the reason it could not.
func (s *sampler) take(ctx context.Context, quiet bool) {
	now := time.Now()
	lat := s.lat.take()
	if quiet {
		lat = nil // the load's last moments, not the quiet gateway's
	}
	smp := Sample{At: now.Sub(s.start), Quiet: quiet, Answered: len(lat), P99: p99(lat),
		Rate: float64(len(lat)) / now.Sub(s.last).Seconds()}
	s.cpuSince(&smp, now.Sub(s.last))
	s.last = now
	text, err := s.metrics(ctx)
	if err == nil {
		err = smp.fill(text)
	}
	if err == nil {
		smp.RedisConns, err = redisClients(s.w.redis.Addr())
	}
	if err != nil {
		s.errs = append(s.errs, fmt.Sprintf("at %s: %v", smp.At.Round(time.Second), err))
		return
	}
	s.samples = append(s.samples, smp)
}

func (s *sampler) metrics(ctx context.Context) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.w.gw.URL()+"/metrics", nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", "Bearer "+s.w.id.APIKeys["ops"])
	resp, err := s.client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET /metrics: status %d", resp.StatusCode)
	}
	return string(b), nil
}

// fill reads the sample's figures from a /metrics text. A series missing
// is an error: a sample of zeros would pass every check.
func (smp *Sample) fill(text string) error {
	sums := metricSums(text)
	for _, f := range []struct {
		name string
		to   func(float64)
	}{
		{"go_goroutines", func(v float64) { smp.Goroutines = int(v) }},
		{"process_open_fds", func(v float64) { smp.FDs = int(v) }},
		{"process_resident_memory_bytes", func(v float64) { smp.RSS = int64(v) }},
		{"go_memstats_heap_inuse_bytes", func(v float64) { smp.HeapInuse = int64(v) }},
		{"go_memstats_next_gc_bytes", func(v float64) { smp.HeapGoal = int64(v) }},
		{"go_sql_open_connections", func(v float64) { smp.DBOpen = int(v) }},
		{"go_sql_in_use_connections", func(v float64) { smp.DBInUse = int(v) }},
		{"go_sql_max_open_connections", func(v float64) { smp.DBMax = int(v) }},
		{"gateway_outbox_jobs", func(v float64) { smp.Outbox = int(v) }},
		{"gateway_memory_gate_entries", func(v float64) { smp.GateEntries = int(v) }},
	} {
		v, ok := sums[f.name]
		if !ok {
			return fmt.Errorf("/metrics has no %s", f.name)
		}
		f.to(v)
	}
	smp.GOGC = 100 // the runtime's default, when the collector does not say
	if v, ok := sums["go_gc_gogc_percent"]; ok && v > 0 {
		smp.GOGC = int(v)
	}
	return nil
}

// metricSums adds up each metric's series in a Prometheus text
// exposition (both database pools, every outbox kind and state).
func metricSums(text string) map[string]float64 {
	out := map[string]float64{}
	for _, line := range strings.Split(text, "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		series, value, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil {
			continue
		}
		name, _, _ := strings.Cut(series, "{")
		out[name] += v
	}
	return out
}

// redisClients is the Redis server's connected_clients less this
// connection: the gateway's pool, as nothing else talks to the private
// Redis.
func redisClients(addr string) (int, error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte("INFO clients\r\n")); err != nil {
		return 0, err
	}
	r := bufio.NewReader(c)
	head, err := r.ReadString('\n') // "$<length>" of the bulk reply
	if err != nil {
		return 0, err
	}
	n, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(head, "$")))
	if err != nil {
		return 0, fmt.Errorf("redis INFO answered %q", head)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(body), "\r\n") {
		if v, ok := strings.CutPrefix(line, "connected_clients:"); ok {
			clients, err := strconv.Atoi(v)
			return clients - 1, err
		}
	}
	return 0, fmt.Errorf("redis INFO clients has no connected_clients")
}
