package stack

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestDataRacesFindsEachReport(t *testing.T) {
	log := `{"level":"INFO","msg":"serving"}
==================
WARNING: DATA RACE
Write at 0x00c000 by goroutine 7:
  main.a()
==================
{"level":"INFO","msg":"more"}
==================
WARNING: DATA RACE
Read at 0x00c008 by goroutine 9:
  main.b()
==================
`
	path := filepath.Join(t.TempDir(), "gateway.log")
	if err := os.WriteFile(path, []byte(log), 0o600); err != nil {
		t.Fatal(err)
	}
	races, err := DataRaces(path)
	if err != nil || len(races) != 2 || !strings.Contains(races[0], "main.a()") || !strings.Contains(races[1], "main.b()") ||
		strings.Contains(races[0], "more") {
		t.Fatalf("DataRaces = %q, %v", races, err)
	}
	if err := os.WriteFile(path, []byte(`{"msg":"clean"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if races, err := DataRaces(path); err != nil || len(races) != 0 {
		t.Fatalf("clean log: %q, %v", races, err)
	}
}
