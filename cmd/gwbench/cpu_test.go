package main

import (
	"crypto/sha256"
	"os"
	"strings"
	"testing"
	"time"
)

// TestMeterChargesTheBusyProcess burns CPU in this process (the "driver")
// during a phase: the meter must charge it to the driver, not to the idle
// "gateway" (here: the test's parent, which does nothing meanwhile), and
// see the machine busy.
func TestMeterChargesTheBusyProcess(t *testing.T) {
	m := &meter{procs: []proc{{"gateway", os.Getppid()}, {"driver", os.Getpid()}}}
	r := m.measure(func() Result {
		sum := sha256.Sum256(nil)
		for end := time.Now().Add(300 * time.Millisecond); time.Now().Before(end); {
			sum = sha256.Sum256(sum[:])
		}
		return Result{N: 100}
	})
	driver, gw := r.Usage.of("driver"), r.Usage.of("gateway")
	if driver < 150*time.Millisecond || gw > driver/4 {
		t.Errorf("driver CPU %s, gateway CPU %s: want the driver charged ~300ms", driver, gw)
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

func TestCPURowsHeaderAndTotals(t *testing.T) {
	u := Usage{Procs: []ProcCPU{{"gateway", 300 * time.Millisecond}, {"mariadb", 100 * time.Millisecond}}, Busy: 0.5}
	res := Result{N: 1000, Elapsed: time.Second, Usage: u}
	rows := cpuRows(BackendReport{Levels: []Level{{Concurrency: 8, New: res, Dup: res, Ceiling: res}}})
	if got := strings.Join(rows[0], ","); got != "conc,phase,ops/s,gateway,mariadb,total,machine busy" {
		t.Fatalf("header %q", got)
	}
	if got := strings.Join(rows[1], ","); got != "8,new,1000,300µs,100µs,400µs,50%" {
		t.Errorf("new row %q", got)
	}
	if len(rows) != 4 {
		t.Errorf("%d rows, want header + new, dup, ceiling", len(rows))
	}
}
