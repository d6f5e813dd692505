package stack

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// BuildGateway compiles paygateway/cmd/gateway into dir and returns the
// binary's path. It runs `go build` from the module root, found by walking
// up from the working directory. Built from a program that has the race
// detector (tests under `go test -race`), the gateway gets it too: it then
// reuses the packages the tests compiled, and a data race in the real
// process is reported in its log (and makes it exit with status 66).
func BuildGateway(ctx context.Context, dir string) (string, error) {
	root, err := ModuleRoot()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "gateway")
	args := []string{"build", "-o", bin}
	if raceBuild {
		args = append(args, "-race")
	}
	cmd := exec.CommandContext(ctx, "go", append(args, "./cmd/gateway")...)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/gateway: %w: %s", err, tail(out))
	}
	return bin, nil
}

// ModuleRoot is the nearest directory at or above the working directory
// holding go.mod.
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod above the working directory")
		}
		dir = parent
	}
}

// Gateway is the gateway binary run as a child process.
type Gateway struct {
	Bin  string
	Dir  string   // logs go to Dir/gateway.log
	Env  []string // GATEWAY_* settings; GATEWAY_HTTP_ADDR is set from Port
	Port int
	proc *Proc
}

// URL is the gateway's base URL.
func (g *Gateway) URL() string { return "http://127.0.0.1:" + strconv.Itoa(g.Port) }

// Start runs the gateway and waits until /readyz answers 200.
func (g *Gateway) Start(ctx context.Context) error {
	if g.Port == 0 {
		p, err := FreePort()
		if err != nil {
			return err
		}
		g.Port = p
	}
	env := append(append([]string{}, g.Env...), "GATEWAY_HTTP_ADDR=127.0.0.1:"+strconv.Itoa(g.Port))
	var err error
	g.proc, err = StartProc("gateway", g.Bin, []string{"serve"}, env, filepath.Join(g.Dir, "gateway.log"))
	if err != nil {
		return err
	}
	client := &http.Client{Timeout: time.Second}
	return waitFor(ctx, g.proc, 90*time.Second, func() error {
		resp, err := client.Get(g.URL() + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("readyz %d", resp.StatusCode)
		}
		return nil
	})
}

// Kill ends the gateway with SIGKILL: no shutdown, in-flight work is lost.
func (g *Gateway) Kill() {
	if g.proc != nil {
		g.proc.Kill()
	}
}

// Stop ends the gateway with SIGTERM (graceful shutdown).
func (g *Gateway) Stop() {
	if g.proc != nil {
		g.proc.Stop(30 * time.Second) // above shutdown_timeout (15 s) + the 5 s cut-off grace
	}
}

// PID is the running gateway's process id.
func (g *Gateway) PID() int { return g.proc.PID() }

// CPUTime returns user+system CPU the process has used so far, read from
// /proc/<pid>/stat (Linux only).
func CPUTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command name (which may hold spaces) start after ')'.
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 13 {
		return 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	utime, err1 := strconv.ParseInt(fields[11], 10, 64)
	stime, err2 := strconv.ParseInt(fields[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	const ticksPerSecond = 100 // USER_HZ on every Linux we run on
	return time.Duration(utime+stime) * time.Second / ticksPerSecond, nil
}

// MachineIdle reads the idle (idle+iowait) and total jiffies of all cores
// from /proc/stat; zeros if it cannot.
func MachineIdle() (idle, total int64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	fields := strings.Fields(line)
	if len(fields) < 6 || fields[0] != "cpu" {
		return 0, 0
	}
	for i, f := range fields[1:min(len(fields), 9)] { // user … steal; guest time is in user already
		v, _ := strconv.ParseInt(f, 10, 64)
		total += v
		if i == 3 || i == 4 { // idle, iowait
			idle += v
		}
	}
	return idle, total
}

// DataRaces returns the race detector's reports in a log file, if any.
func DataRaces(logPath string) ([]string, error) {
	b, err := os.ReadFile(logPath)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, part := range strings.Split(string(b), "WARNING: DATA RACE")[1:] {
		report, _, _ := strings.Cut(part, "==================")
		out = append(out, "WARNING: DATA RACE"+report)
	}
	return out, nil
}
