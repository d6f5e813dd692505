package main

import (
	"crypto/sha256"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestMeterChargesTheBusyProcess burns CPU in this process (the "driver")
// during a phase: the meter must charge it to the driver, not to the idle
// "gateway" (here: the test's parent, which does nothing meanwhile), and
// see the machine busy. It spins until this process has used spinCPU of
// CPU by its own clock (getrusage), not for a wall time, so that a busy
// machine makes it slower, never failing.
func TestMeterChargesTheBusyProcess(t *testing.T) {
	const spinCPU = 300 * time.Millisecond
	m := &meter{procs: []proc{{"gateway", os.Getppid()}, {"driver", os.Getpid()}}}
	var used time.Duration
	r := m.measure(func() Result {
		used = spin(t, spinCPU, time.Minute)
		return Result{N: 100}
	})
	// /proc/<pid>/stat counts user and system time in whole ticks (10 ms):
	// each of the two samples may be short by up to a tick of each.
	const ticks = 40 * time.Millisecond
	driver, gw := r.Usage.of("driver"), r.Usage.of("gateway")
	if driver < used-ticks || gw > driver/4 {
		t.Errorf("driver CPU %s, gateway CPU %s: want the driver charged the %s it used", driver, gw, used)
	}
	if r.Usage.Busy <= 0 || r.Usage.Busy > 1 {
		t.Errorf("machine busy %.2f, want in (0, 1]", r.Usage.Busy)
	}
	if r.CPU != gw {
		t.Errorf("Result.CPU %s, want the gateway's %s", r.CPU, gw)
	}
	line := r.Usage.perOp(100)
	if !strings.Contains(line, "driver ") || !strings.Contains(line, "% busy") {
		t.Errorf("perOp: %q", line)
	}
}

// spin burns CPU until this process has used cpu more of it (by
// getrusage), or until limit of wall time has passed, and returns how
// much it used. Reaching the limit fails the test.
func spin(t *testing.T, cpu, limit time.Duration) time.Duration {
	start := selfCPU(t)
	sum := sha256.Sum256(nil)
	for end := time.Now().Add(limit); time.Now().Before(end); {
		for range 1000 {
			sum = sha256.Sum256(sum[:])
		}
		if used := selfCPU(t) - start; used >= cpu {
			return used
		}
	}
	t.Fatalf("used less than %s of CPU in %s of wall time", cpu, limit)
	return 0
}

// selfCPU is this process's user+system CPU time.
func selfCPU(t *testing.T) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func TestCPURowsHeaderAndTotals(t *testing.T) {
	u := Usage{Procs: []ProcCPU{{"gateway", 300 * time.Millisecond}, {"mariadb", 100 * time.Millisecond}}, Busy: 0.5}
	res := Result{N: 1000, Elapsed: time.Second, Usage: u}
	rows := cpuRows(BackendReport{Levels: []Level{{Concurrency: 8, New: res, Dup: res, Ceiling: res, Grouped: res}}})
	if got := strings.Join(rows[0], ","); got != "conc,phase,ops/s,gateway,mariadb,total,machine busy" {
		t.Fatalf("header %q", got)
	}
	if got := strings.Join(rows[1], ","); got != "8,new,1000,300µs,100µs,400µs,50%" {
		t.Errorf("new row %q", got)
	}
	if len(rows) != 5 || rows[4][1] != "grouped ceiling" {
		t.Errorf("%d rows, want header + new, dup, ceiling, grouped ceiling", len(rows))
	}
}
