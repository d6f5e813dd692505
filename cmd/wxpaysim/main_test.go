package main

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

func TestParseFlagsDefaults(t *testing.T) {
	cfg, err := parseFlags(nil)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct{ name, got, want string }{
		{"keys", cfg.KeysDir, ".run/keys"},
		{"addr", cfg.Addr, "127.0.0.1:8081"},
		{"notify", cfg.NotifyURL, "http://127.0.0.1:8080/v1/wechatpay/notify/payment"},
		{"refund notify", cfg.RefundNotifyURL, "http://127.0.0.1:8080/v1/wechatpay/notify/refund"},
		{"refund gap", cfg.RefundGap.String(), "1m0s"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.got != tc.want {
				t.Fatalf("%s=%q, want %q", tc.name, tc.got, tc.want)
			}
		})
	}
}

func TestRunStopsOnSIGTERM(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "keys")
	done := make(chan error, 1)
	go func() { done <- run([]string{"--addr", "127.0.0.1:0", "--keys", dir}) }()
	// keys.json appears after the signal handler is installed.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(dir, "keys.json")); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("keys never written")
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not stop on SIGTERM")
	}
}
