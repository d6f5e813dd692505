package main

import (
	"context"
	"maps"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"paygateway/cmd/internal/stack"
)

// recorded is the ledger of orders each written once.
func recorded(orders ...string) tableRows {
	rows := tableRows{}
	for _, w := range paymentWrites {
		rows[w.table] = map[string]int{}
		for _, no := range orders {
			rows[w.table][no] = 1
		}
	}
	return rows
}

// TestCheckPayments: the ledger must hold, once, every order answered
// 2xx, all of its rows or none, and nothing else; an order answered
// otherwise may be there (counted as unknown).
func TestCheckPayments(t *testing.T) {
	sent := []string{"B-1", "B-2", "B-3"}
	tests := []struct {
		name    string
		rows    tableRows
		ok      []bool
		unknown int
		want    string // a problem that must be reported ("" none)
	}{
		{"all recorded", recorded("B-1", "B-2", "B-3"), []bool{true, true, true}, 0, ""},
		{"failed one not recorded", recorded("B-1", "B-3"), []bool{true, false, true}, 0, ""},
		{"failed one recorded anyway", recorded("B-1", "B-2", "B-3"), []bool{true, false, true}, 1, ""},
		{"answered without committing", recorded("B-1", "B-3"), []bool{true, true, true}, 0,
			"1 orders answered 2xx have no rows: answered without committing (first: B-2)"},
		{"written twice", func() tableRows { r := recorded("B-1", "B-2", "B-3"); r["outbox_jobs"]["B-2"] = 2; return r }(),
			[]bool{true, true, true}, 0, "1 orders have a row written more than once (first: B-2: notifications 1, payments 1, state_history 1, outbox_jobs 2)"},
		{"partial", func() tableRows { r := recorded("B-1", "B-2", "B-3"); delete(r["payments"], "B-3"); return r }(),
			[]bool{true, true, false}, 0, "1 orders have some of their rows and not others (first: B-3: notifications 1, payments 0, state_history 1, outbox_jobs 1)"},
		{"never sent", recorded("B-1", "B-2", "B-3", "B-9"), []bool{true, true, true}, 0, "rows belong to orders never sent"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			unknown, problems := checkPayments(tc.rows, sent, tc.ok)
			got := strings.Join(problems, "\n")
			if unknown != tc.unknown || (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
				t.Errorf("unknown %d, problems %q; want unknown %d, problem %q", unknown, got, tc.unknown, tc.want)
			}
		})
	}
}

// TestCheckRefunds: a refund answered 201 must be in the ledger once and
// executed once; a 202 is not required to be; no order has two.
func TestCheckRefunds(t *testing.T) {
	run := &refundRun{orders: []string{"R-1", "R-2", "R-3"},
		status:   []int{http.StatusCreated, http.StatusAccepted, http.StatusCreated},
		refundNo: []string{"RF1", "", "RF3"}}
	once := func(string) int { return 1 }
	if p := checkRefunds(map[string]int{"R-1": 1, "R-2": 1, "R-3": 1}, run, once); len(p) != 0 {
		t.Errorf("all there: %q", p)
	}
	if p := checkRefunds(map[string]int{"R-1": 1, "R-3": 1}, run, once); len(p) != 0 {
		t.Errorf("202 not in the ledger: %q, want no problem", p)
	}
	for _, tc := range []struct {
		rows     map[string]int
		executed func(string) int
		want     string
	}{
		{map[string]int{"R-1": 1}, once, "1 refunds answered 201 are not in the ledger (first: R-3)"},
		{map[string]int{"R-1": 1, "R-2": 2, "R-3": 1}, once, "1 orders have more than one refund (first: R-2: 2 refunds)"},
		{map[string]int{"R-1": 1, "R-3": 1}, func(no string) int { return map[string]int{"RF1": 1}[no] },
			`1 refunds answered 201 were not executed exactly once by WeChat Pay (first: R-3 ("RF3") executed 0 times)`},
	} {
		if p := strings.Join(checkRefunds(tc.rows, run, tc.executed), "\n"); p != tc.want {
			t.Errorf("problems %q, want %q", p, tc.want)
		}
	}
}

// TestPrefixRange: the range holds every key under the prefix and no
// other level's.
func TestPrefixRange(t *testing.T) {
	lo, hi := prefixRange("Bm008-")
	for key, in := range map[string]bool{"Bm008-0000000": true, "Bm008-9999999": true, "Bm0080-0000001": false,
		"Bm008": false, "Bm009-0000000": false, "Bm032-0000000": false} {
		if got := key >= lo && key < hi; got != in {
			t.Errorf("%q in [%q, %q): %v, want %v", key, lo, hi, got, in)
		}
	}
}

// TestOrderAlternates: the second level runs the ceiling first, and the
// report says which order each level used.
func TestOrderAlternates(t *testing.T) {
	got := orderNote([]Level{{Concurrency: 8}, {Concurrency: 32, CeilingFirst: true}})
	want := "8 clients: gateway (new, dup), then ceilings (one commit each, grouped); " +
		"32 clients: ceilings (one commit each, grouped), then gateway (new, dup)"
	if got != want {
		t.Errorf("order %q, want %q", got, want)
	}
}

func TestRepeatedLevelIsRefused(t *testing.T) {
	if _, err := parseFlags([]string{"-levels", "8,32,8"}); err == nil {
		t.Error("-levels 8,32,8 accepted: the two 8s would share their orders")
	}
}

// TestOnlyAnsweredAreRedelivered: the duplicate phase resends, dupFactor
// times each, only the notifications answered 2xx; one that failed may
// never have been recorded, and would be a first delivery.
func TestOnlyAnsweredAreRedelivered(t *testing.T) {
	id, err := stack.NewIdentity(filepath.Join(t.TempDir(), "keys"))
	if err != nil {
		t.Fatal(err)
	}
	e := &env{id: id}
	notes, err := signAll(context.Background(), 4, newNotification(e, "T-"))
	if err != nil {
		t.Fatal(err)
	}
	dups, err := redeliveries(context.Background(), e, notes, []bool{true, false, true, false})
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for _, d := range dups {
		count[d.ID]++
	}
	want := map[string]int{notes[0].ID: dupFactor, notes[2].ID: dupFactor}
	if !maps.Equal(count, want) {
		t.Errorf("redelivered %v, want %v", count, want)
	}
	if none, err := redeliveries(context.Background(), e, notes, make([]bool, 4)); err != nil || len(none) != 0 {
		t.Errorf("none answered: %d redeliveries, err %v", len(none), err)
	}
}
