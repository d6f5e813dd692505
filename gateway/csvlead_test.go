package gateway

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"testing"
)

// TestCSVCellStartingAFormulaIsNeutralised: a text cell that starts with
// = + - @ (or a tab or carriage return, or any of them after spaces or
// quotes) is exported with a leading quote, so a spreadsheet opening the
// export shows the text instead of running it; a payer's reason "-1+1" or
// "@SUM(…)" would otherwise be a formula in finance's sheet.
func TestCSVCellStartingAFormulaIsNeutralised(t *testing.T) {
	texts := []string{"=1+1", "+1", "-1+1", "@SUM(A1)", "\t=1", "\r=1", " =1", "  -2", `"@SUM(1)`, ` "+1`}
	var buf bytes.Buffer
	w := bufio.NewWriter(&buf)
	for _, s := range texts {
		writeRecord(w, []string{cell(s)})
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	got, err := csv.NewReader(bytes.NewReader(buf.Bytes())).ReadAll()
	if err != nil || len(got) != len(texts) {
		t.Fatalf("read back: %q, %v", got, err)
	}
	for i, s := range texts {
		if readsAsFormula(got[i][0]) {
			t.Errorf("cell(%q) is exported as %q: a spreadsheet reads a formula", s, got[i][0])
		}
	}
	for _, s := range []string{"1-2", "a=b", "x@y.z", "中文"} {
		if c := cell(s); c != s {
			t.Errorf("cell(%q) = %q, want it unchanged", s, c)
		}
	}
}
