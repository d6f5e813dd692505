package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/redis/go-redis/v9"
)

// TestLibraryLogsGoToTheLogWriter: once logging is set up, go-redis's own
// message about a failed dial and the standard log package's lines (where
// net/http's server writes its errors) are JSON warnings in the log, not
// raw writes to stderr that block their caller while stderr stalls.
func TestLibraryLogsGoToTheLogWriter(t *testing.T) {
	buf := &logBuffer{}
	restoreLogging(t)
	setupLoggingTo(buf, LogConfig{Level: "info"})

	const stdLine = "http: TLS handshake error from 10.0.0.1:4242: EOF"
	log.Print(stdLine)
	c := redis.NewClient(&redis.Options{Addr: freeAddr(t), DialerRetries: 1, MaxRetries: -1})
	defer c.Close()
	if err := c.Ping(context.Background()).Err(); err == nil {
		t.Fatal("ping of an address nobody listens on succeeded")
	}

	for msg, detail := range map[string]string{stdLine: "", "redis client": "failed to dial"} {
		lines := logLines(t, buf.String(), msg)
		if len(lines) == 0 {
			t.Errorf("no %q line in the log: %q", msg, buf.String())
		}
		for _, l := range lines {
			if d, _ := l["detail"].(string); !strings.Contains(d, detail) || l["level"] != "WARN" {
				t.Errorf("line %v, want a WARN with %q in its detail", l, detail)
			}
		}
	}
}

// restoreLogging puts back, when the test ends, what setupLoggingTo changes.
// go-redis keeps its logger: it cannot be read back, and the one set routes
// to slog, whatever its default then is.
func restoreLogging(t *testing.T) {
	oldSlog, oldOut, oldFlags := slog.Default(), log.Writer(), log.Flags()
	t.Cleanup(func() {
		slog.SetDefault(oldSlog)
		slog.SetLogLoggerLevel(slog.LevelInfo)
		log.SetOutput(oldOut)
		log.SetFlags(oldFlags)
		_ = mysql.SetLogger(log.New(os.Stderr, "[mysql] ", log.Ldate|log.Ltime|log.Lshortfile))
	})
}

// TestExitLineIsJSON: the line naming why the process exits is a JSON log
// line like every other, so a collector parsing the stream keeps it.
func TestExitLineIsJSON(t *testing.T) {
	var stderr bytes.Buffer
	cmd := exec.Command(buildGateway(t), "no-such-command")
	cmd.Stderr = &stderr
	if err := cmd.Run(); err == nil {
		t.Fatal("an unknown command succeeded")
	}
	lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
	var line map[string]any
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &line); err != nil {
		t.Fatalf("last stderr line is not JSON: %v\n%s", err, stderr.String())
	}
	if errText, _ := line["err"].(string); line["level"] != "ERROR" || !strings.Contains(errText, `unknown command "no-such-command"`) {
		t.Errorf("exit line %v, want an ERROR naming the unknown command", line)
	}
}

// TestExitWithStalledStderr: a command that fails while stderr is stalled
// (its pipe full, nobody reading) still exits, its message queued in the
// log, instead of blocking for ever in a write to stderr.
func TestExitWithStalledStderr(t *testing.T) {
	bin := buildGateway(t)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	fillPipe(t, w)
	cmd := exec.Command(bin, "no-such-command")
	cmd.Stderr = w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 1 {
			t.Fatalf("exit: %v, want status 1", err)
		}
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatal("the gateway did not exit within 10 s of failing: blocked writing its error to the stalled stderr")
	}
}

// fillPipe writes into w until its pipe holds all it can, then leaves it
// blocking, as a stalled log collector's pipe is.
func fillPipe(t *testing.T, w *os.File) {
	t.Helper()
	fd := int(w.Fd())
	if err := syscall.SetNonblock(fd, true); err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 4096)
	for {
		if _, err := syscall.Write(fd, chunk); err != nil {
			if !errors.Is(err, syscall.EAGAIN) {
				t.Fatal(err)
			}
			break
		}
	}
	if err := syscall.SetNonblock(fd, false); err != nil {
		t.Fatal(err)
	}
}
