package gateway

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"slices"
	"strings"
	"testing"
)

// TestCSVRecordsReadBackAndQuoteSemicolons: every record reads back the
// same with encoding/csv, and a field holding ';' is quoted, so a
// spreadsheet whose list separator is ';' keeps it in one cell instead of
// starting a new one (maybe a formula) after the ';'.
func TestCSVRecordsReadBackAndQuoteSemicolons(t *testing.T) {
	rows := [][]string{
		{"1", "x;=cmd|' /C calc'!A0", cell("=1+1"), ""},
		{"2", `say "hi", then`, "line\nbreak", " padded "},
		{"3", "tab\there", "plain", "中文;退款"},
	}
	var buf bytes.Buffer
	w := bufio.NewWriter(&buf)
	for _, r := range rows {
		writeRecord(w, r)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	got, err := csv.NewReader(strings.NewReader(buf.String())).ReadAll()
	if err != nil || len(got) != len(rows) {
		t.Fatalf("read back: %v, %v", got, err)
	}
	for i := range rows {
		if !slices.Equal(got[i], rows[i]) {
			t.Errorf("row %d read back as %q, want %q", i, got[i], rows[i])
		}
	}
	if first := strings.SplitN(buf.String(), "\n", 2)[0]; first != `1,"x;=cmd|' /C calc'!A0",'=1+1,` {
		t.Errorf("first record %q, want the ';' field quoted and the rest as is", first)
	}
}
