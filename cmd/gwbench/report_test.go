package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestNewRunKeepsTheHandWrittenSections: writing BENCHMARKS.md again
// replaces the generated tables and keeps every section after the targets
// (session notes, verdicts, the chaos run), once each.
func TestNewRunKeepsTheHandWrittenSections(t *testing.T) {
	path := filepath.Join(t.TempDir(), "BENCHMARKS.md")
	hand := "\n## Session 20 (notes)\n\nA host whose speed changed.\n\n## Verdict (old run)\n\nMet.\n\n## Chaos run\n\nAll 0.\n"
	if err := os.WriteFile(path, []byte("# Benchmarks\n\nold tables\n"+benchTargets+hand), 0o644); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := writeMarkdown(path, "make bench", "test machine", nil); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	got := string(b)
	if strings.Contains(got, "old tables") || !strings.HasSuffix(got, benchTargets+hand) {
		t.Errorf("rewritten file:\n%s\nwant the new tables, the targets, then the hand-written sections", got)
	}
	for _, h := range []string{"## Targets", "## Session 20", "## Verdict", "## Chaos run"} {
		if n := strings.Count(got, h); n != 1 {
			t.Errorf("%q appears %d times, want once", h, n)
		}
	}

	// A file from before the session sections: kept from its first verdict.
	if err := os.WriteFile(path, []byte("# Benchmarks\n\nold tables\n\n## Verdict (old run)\n\nMet.\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if kept := keptSection(path); kept != "\n## Verdict (old run)\n\nMet.\n" {
		t.Errorf("kept %q, want the verdict", kept)
	}
}
