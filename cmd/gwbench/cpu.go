package main

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"paygateway/cmd/internal/stack"
)

// Every process of a run shares the machine's cores, so the report shows
// where they went: each process's CPU per operation and how busy the
// whole machine was. A phase that keeps the machine ~100% busy is bound
// by CPU; its figures then move with anything else the machine runs.

// proc is one process whose CPU a phase accounts for.
type proc struct {
	name string // gateway, mariadb, redis, driver
	pid  int
}

// meter samples the CPU of procs and of the whole machine around a phase.
type meter struct{ procs []proc }

// isLocal reports whether a DSN or address names this machine, so that
// the server process found by name is the one the bench talks to.
func isLocal(addr string) bool {
	return addr == "" || strings.Contains(addr, "127.0.0.1") || strings.Contains(addr, "localhost")
}

// newMeter accounts for the gateway, this process (the driver and the
// in-process simulators) and, when servers is set (the bench talks to a
// MariaDB and Redis on this machine), their processes.
func newMeter(gatewayPID int, servers bool) *meter {
	m := &meter{procs: []proc{{"gateway", gatewayPID}}}
	if servers {
		if pid := pidOf("mariadbd", "mysqld"); pid > 0 {
			m.procs = append(m.procs, proc{"mariadb", pid})
		}
		if pid := pidOf("redis-server"); pid > 0 {
			m.procs = append(m.procs, proc{"redis", pid})
		}
	}
	m.procs = append(m.procs, proc{"driver", os.Getpid()})
	return m
}

// Usage is the CPU a phase used.
type Usage struct {
	Procs []ProcCPU
	Busy  float64 // share of all cores busy during the phase, 0..1
}

// ProcCPU is one process's CPU during a phase.
type ProcCPU struct {
	Name string
	CPU  time.Duration
}

// measure runs phase and records the CPU used during it.
func (m *meter) measure(phase func() Result) Result {
	before := m.sample()
	idle0, total0 := stack.MachineIdle()
	r := phase()
	after := m.sample()
	idle1, total1 := stack.MachineIdle()
	for i, p := range m.procs {
		if before[i] >= 0 && after[i] >= 0 {
			r.Usage.Procs = append(r.Usage.Procs, ProcCPU{Name: p.name, CPU: after[i] - before[i]})
		}
	}
	if total1 > total0 {
		r.Usage.Busy = 1 - float64(idle1-idle0)/float64(total1-total0)
	}
	r.CPU = r.Usage.of("gateway")
	return r
}

func (m *meter) sample() []time.Duration {
	out := make([]time.Duration, len(m.procs))
	for i, p := range m.procs {
		d, err := stack.CPUTime(p.pid)
		if err != nil {
			d = -1
		}
		out[i] = d
	}
	return out
}

// of returns the named process's CPU (0 if not measured).
func (u Usage) of(name string) time.Duration {
	for _, p := range u.Procs {
		if p.Name == name {
			return p.CPU
		}
	}
	return 0
}

// perOp renders each process's CPU per operation, e.g.
// "gateway 310µs · mariadb 420µs · redis 20µs · driver 40µs · machine 97% busy".
func (u Usage) perOp(ops int) string {
	if ops <= 0 || len(u.Procs) == 0 {
		return "n/a"
	}
	parts := make([]string, 0, len(u.Procs)+1)
	for _, p := range u.Procs {
		parts = append(parts, p.Name+" "+us(p.CPU/time.Duration(ops)))
	}
	parts = append(parts, fmt.Sprintf("machine %.0f%% busy", 100*u.Busy))
	return strings.Join(parts, " · ")
}

// pidOf returns the pid of the only process whose command name is one of
// names; 0 when there is none or more than one (a chaos run's private
// servers, say), so that no column shows another server's CPU.
func pidOf(names ...string) int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	found := 0
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		comm, err := os.ReadFile("/proc/" + e.Name() + "/comm")
		if err != nil {
			continue
		}
		for _, n := range names {
			if strings.TrimSpace(string(comm)) == n {
				if found != 0 {
					return 0
				}
				found = pid
			}
		}
	}
	return found
}

// measureRSA times crypto/rsa PKCS#1 v1.5 SHA-256 signing and
// verification with a 2048-bit key, the scheme WeChat Pay v3 uses both
// ways: the fixed cost under every callback and refund.
func measureRSA() string {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return "not measured: " + err.Error()
	}
	sum := sha256.Sum256([]byte("gwbench"))
	const signs, verifies = 100, 1000
	start := time.Now()
	var sig []byte
	for range signs {
		sig, _ = rsa.SignPKCS1v15(nil, key, crypto.SHA256, sum[:])
	}
	sign := time.Since(start) / signs
	start = time.Now()
	for range verifies {
		_ = rsa.VerifyPKCS1v15(&key.PublicKey, crypto.SHA256, sum[:], sig)
	}
	verify := time.Since(start) / verifies
	return fmt.Sprintf("sign %s, verify %s (crypto/rsa, one core)", ms(sign), us(verify))
}
