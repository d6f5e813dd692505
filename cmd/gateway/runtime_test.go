package main

import (
	"runtime/debug"
	"testing"
)

// TestApplyRuntime: the config sets the collector's pace unless GOGC is
// set in the environment.
func TestApplyRuntime(t *testing.T) {
	orig := debug.SetGCPercent(100)
	defer debug.SetGCPercent(orig)
	t.Setenv("GOGC", "")
	applyRuntime(RuntimeConfig{GCPercent: 400})
	if got := debug.SetGCPercent(100); got != 400 {
		t.Fatalf("gc percent = %d, want 400 from the config", got)
	}
	t.Setenv("GOGC", "150")
	applyRuntime(RuntimeConfig{GCPercent: 400})
	if got := debug.SetGCPercent(100); got != 100 {
		t.Fatalf("gc percent = %d, want it left alone when GOGC is set", got)
	}
}
