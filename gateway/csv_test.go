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

// TestCSVCellsHoldNoFormulaInSemicolonLocales: a spreadsheet whose list
// separator is ';' splits every line at each ';' whatever the quotes (the
// quote of a field after a ',' stands in the middle of its piece), and at
// every line break; no piece of a text cell may then start a formula.
func TestCSVCellsHoldNoFormulaInSemicolonLocales(t *testing.T) {
	texts := []string{"x;=cmd|' /C calc'!A0;y", "ok\n=HYPERLINK(\"http://e\")", "a; +1", "a;\r@SUM(1)",
		"-2", "fine; text\nhere", "=1;=2", `size;"=cmd|' /C calc'!A0;`, `x;"@SUM(1+1)`, "a\n\"=1+1", `a; "-1+1`}
	var buf bytes.Buffer
	w := bufio.NewWriter(&buf)
	for i, s := range texts {
		writeRecord(w, []string{num(int64(i)), cell(s), "z"})
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	r := csv.NewReader(strings.NewReader(buf.String()))
	r.Comma, r.LazyQuotes, r.FieldsPerRecord = ';', true, -1
	pieces, err := r.ReadAll()
	if err != nil {
		t.Fatalf("read with ';': %v", err)
	}
	for _, row := range pieces {
		for _, p := range row {
			if readsAsFormula(p) {
				t.Errorf("a ';' spreadsheet reads the cell %q: a formula", p)
			}
		}
	}
	got, err := csv.NewReader(strings.NewReader(buf.String())).ReadAll()
	if err != nil || len(got) != len(texts) {
		t.Fatalf("read back with ',': %q, %v", got, err)
	}
	for i, s := range texts {
		if want := strings.NewReplacer("'", "").Replace(got[i][1]); want != strings.NewReplacer("'", "").Replace(s) {
			t.Errorf("cell %q read back as %q: more changed than quotes added", s, got[i][1])
		}
	}
	if c := cell("fine; text"); c != "fine; text" {
		t.Errorf("cell(%q) = %q, want it unchanged", "fine; text", c)
	}
}

// readsAsFormula is what a lenient spreadsheet makes of a piece: quotes
// and spaces before its first character are dropped (`""=1` is an empty
// string, then =1).
func readsAsFormula(p string) bool {
	p = strings.TrimLeft(p, ` "`)
	return p != "" && strings.ContainsRune("=+-@\t\r", rune(p[0]))
}
