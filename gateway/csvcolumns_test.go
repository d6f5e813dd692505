package gateway

import (
	"reflect"
	"testing"
	"time"

	"paygateway/ledger"
)

// formulaFilled returns a T whose every plain string field holds a
// formula, as a payer's refund reason or a notice's text may.
func formulaFilled[T any]() T {
	var v T
	fillStrings(reflect.ValueOf(&v).Elem())
	return v
}

// fillStrings sets the plain string fields of struct v, and of the structs it
// embeds or holds, to a formula.
func fillStrings(v reflect.Value) {
	for i := range v.NumField() {
		switch f := v.Field(i); {
		case !f.CanSet():
		case f.Type() == reflect.TypeFor[string](): // not a state's own type: the ledger sets those
			f.SetString("=HYPERLINK(\"http://e\")")
		case f.Kind() == reflect.Struct:
			fillStrings(f)
		}
	}
}

// checkRowsNeutral fails for every cell of def's CSV row of a
// formula-filled item that a spreadsheet would read as a formula.
func checkRowsNeutral[T any](t *testing.T, def listDef[T]) {
	t.Helper()
	for i, c := range def.row(formulaFilled[T]()) {
		if readsAsFormula(c) {
			t.Errorf("%s export: column %s is %q, a formula", def.name, def.header[i], c)
		}
	}
}

// TestCSVExportsNeutraliseEveryTextColumn: every text column of every
// export goes through cell, so no column (a refund's reason, a notice's
// summary, an audit path) can carry a formula into finance's spreadsheet;
// a new column written raw fails here.
func TestCSVExportsNeutraliseEveryTextColumn(t *testing.T) {
	checkRowsNeutral(t, paymentList)
	checkRowsNeutral(t, refundList)
	checkRowsNeutral(t, noticeList)
	checkRowsNeutral(t, outboxList)
	checkRowsNeutral(t, anomalyList)
	checkRowsNeutral(t, auditList)
	e := formulaFilled[ledger.TimelineEvent]()
	e.At, e.Type = time.Now(), "refund"
	for _, c := range timelineRow(e) {
		if readsAsFormula(c) {
			t.Errorf("timeline export: a cell is %q, a formula", c)
		}
	}
}
