package main

import (
	"context"
	"database/sql"
	"fmt"
	"net/http"
	"strings"
	"time"

	"paygateway/ledger/ledgerdb"
)

// The ledger check: after each phase gwbench reads the gateway's own
// database and compares it with what the gateway answered. An answer only
// counts if its writes are there, exactly once: a gateway that answers
// 2xx without committing, or writes a redelivery again, makes the run
// invalid instead of faster.

// Check is one ledger check's outcome.
type Check struct {
	Name     string   // the stage checked, e.g. "8 clients"
	Found    string   // the answers and rows found, human readable
	Problems []string // empty when the ledger matches the answers
}

// String is the check's report line.
func (c Check) String() string {
	if len(c.Problems) == 0 {
		return c.Name + ": " + c.Found + ": ok"
	}
	return c.Name + ": " + c.Found + ": FAILED: " + strings.Join(c.Problems, "; ")
}

// ledgerReader reads the gateway's database.
type ledgerReader struct{ db *sql.DB }

func openLedgerReader(ctx context.Context, dsn string) (*ledgerReader, error) {
	g, _, err := ledgerdb.OpenContext(ctx, ledgerdb.Config{DSN: dsn, MaxOpenConns: 2})
	if err != nil {
		return nil, fmt.Errorf("open the gateway's database: %w", err)
	}
	db, err := g.DB()
	if err != nil {
		return nil, err
	}
	return &ledgerReader{db: db}, nil
}

func (l *ledgerReader) close() { l.db.Close() }

// paymentWrites are the rows one new SUCCESS notification writes, in one
// transaction: one of each, counted per out_trade_no.
var paymentWrites = []struct{ table, where string }{
	{"notifications", ""},
	{"payments", " AND state = 'SUCCESS'"},
	{"state_history", ""},
	{"outbox_jobs", ""},
}

// tableRows counts rows per out_trade_no: table → order → rows.
type tableRows map[string]map[string]int

// total is how many rows table has in all.
func (r tableRows) total(table string) int {
	n := 0
	for _, c := range r[table] {
		n += c
	}
	return n
}

// totals renders every write's row count, e.g.
// "notifications 4000, payments 4000, state_history 4000, outbox_jobs 4000".
func (r tableRows) totals() string {
	parts := make([]string, len(paymentWrites))
	for i, w := range paymentWrites {
		parts[i] = fmt.Sprintf("%s %d", w.table, r.total(w.table))
	}
	return strings.Join(parts, ", ")
}

// counts renders one order's rows, e.g. "notifications 1, payments 0, …".
func (r tableRows) counts(no string) string {
	parts := make([]string, len(paymentWrites))
	for i, w := range paymentWrites {
		parts[i] = fmt.Sprintf("%s %d", w.table, r[w.table][no])
	}
	return strings.Join(parts, ", ")
}

// paymentRows reads the rows of every payment write for the orders under
// prefix.
func (l *ledgerReader) paymentRows(ctx context.Context, prefix string) (tableRows, error) {
	rows := tableRows{}
	for _, w := range paymentWrites {
		per, err := l.rowsPerOrder(ctx, w.table, w.where, prefix)
		if err != nil {
			return nil, err
		}
		rows[w.table] = per
	}
	return rows, nil
}

// rowsPerOrder counts table's rows (those matching where, if any) per
// out_trade_no under prefix.
func (l *ledgerReader) rowsPerOrder(ctx context.Context, table, where, prefix string) (map[string]int, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	lo, hi := prefixRange(prefix)
	q := "SELECT out_trade_no, COUNT(*) FROM " + table + " WHERE out_trade_no >= ? AND out_trade_no < ?" +
		where + " GROUP BY out_trade_no"
	rs, err := l.db.QueryContext(ctx, q, lo, hi)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", table, err)
	}
	defer rs.Close()
	out := map[string]int{}
	for rs.Next() {
		var no string
		var n int
		if err := rs.Scan(&no, &n); err != nil {
			return nil, fmt.Errorf("read %s: %w", table, err)
		}
		out[no] = n
	}
	return out, rs.Err()
}

// prefixRange bounds the keys starting with prefix (binary collation on
// both backends), so that the out_trade_no index serves the query.
func prefixRange(prefix string) (lo, hi string) {
	return prefix, prefix[:len(prefix)-1] + string(prefix[len(prefix)-1]+1)
}

// tally counts one kind of problem and keeps its first example.
type tally struct {
	n     int
	first string
}

func (t *tally) add(example string) {
	if t.n == 0 {
		t.first = example
	}
	t.n++
}

// note appends "<n> <what> (first: <example>)" to problems if any.
func (t tally) note(problems []string, what string) []string {
	if t.n == 0 {
		return problems
	}
	return append(problems, fmt.Sprintf("%d %s (first: %s)", t.n, what, t.first))
}

// checkPayments compares rows with the answers: sent are the orders
// delivered, ok[i] whether sent[i] was answered 2xx. Each order answered
// 2xx must have one row of every write; no order may have more than one,
// or some of its writes without the others; no row may belong to an
// order not sent. An order answered otherwise may be recorded (the
// gateway may commit after the sender gave up): unknown counts those.
func checkPayments(rows tableRows, sent []string, ok []bool) (unknown int, problems []string) {
	var lost, partial, twice, foreign tally
	index := make(map[string]bool, len(sent))
	for i, no := range sent {
		index[no] = true
		have := 0
		for _, w := range paymentWrites {
			c := rows[w.table][no]
			if c > 1 {
				twice.add(no + ": " + rows.counts(no))
			}
			if c > 0 {
				have++
			}
		}
		switch {
		case have == 0 && ok[i]:
			lost.add(no)
		case have > 0 && have < len(paymentWrites):
			partial.add(no + ": " + rows.counts(no))
		case have == len(paymentWrites) && !ok[i]:
			unknown++
		}
	}
	for _, w := range paymentWrites {
		for no := range rows[w.table] {
			if !index[no] {
				foreign.add(w.table + " " + no)
			}
		}
	}
	problems = lost.note(problems, "orders answered 2xx have no rows: answered without committing")
	problems = partial.note(problems, "orders have some of their rows and not others")
	problems = twice.note(problems, "orders have a row written more than once")
	return unknown, foreign.note(problems, "rows belong to orders never sent")
}

// checkNew checks the ledger after a phase of new notifications and
// returns what it read, for the check after their duplicates.
func (l *ledgerReader) checkNew(ctx context.Context, name, prefix string, sent []string, ok []bool) (Check, tableRows) {
	c := Check{Name: name, Found: fmt.Sprintf("%d of %d new answered 2xx", countTrue(ok), len(sent))}
	rows, err := l.paymentRows(ctx, prefix)
	if err != nil {
		c.Problems = []string{err.Error()}
		return c, nil
	}
	unknown, problems := checkPayments(rows, sent, ok)
	c.Found += "; rows: " + rows.totals()
	if unknown > 0 {
		c.Found += fmt.Sprintf(" (with %d answered otherwise, yet committed)", unknown)
	}
	c.Problems = problems
	return c, rows
}

// checkDups checks that dups redeliveries of recorded notifications left
// the ledger as it was after their first deliveries (before).
func (l *ledgerReader) checkDups(ctx context.Context, c *Check, prefix string, sent []string, ok []bool, before tableRows, dups int) {
	if before == nil {
		return // the first check could not read the ledger
	}
	after, err := l.paymentRows(ctx, prefix)
	if err != nil {
		c.Problems = append(c.Problems, "after the duplicates: "+err.Error())
		return
	}
	_, problems := checkPayments(after, sent, ok)
	for _, p := range problems {
		c.Problems = append(c.Problems, "after the duplicates: "+p)
	}
	if a, b := after.totals(), before.totals(); a != b {
		c.Problems = append(c.Problems, fmt.Sprintf("%d duplicates changed the rows: %s before, %s after", dups, b, a))
		return
	}
	c.Found += fmt.Sprintf("; unchanged after %d duplicates", dups)
}

func countTrue(bs []bool) int {
	n := 0
	for _, b := range bs {
		if b {
			n++
		}
	}
	return n
}

// checkRefunds compares the refunds under prefix with the answers: each
// order whose refund was answered 201 has exactly one refund in the
// ledger, and WeChat Pay (the simulator) executed it exactly once; no
// order has more than one. executed tells how many times WeChat Pay moved
// the money of an out_refund_no.
func checkRefunds(rows map[string]int, run *refundRun, executed func(outRefundNo string) int) []string {
	var missing, twice, paid tally
	for i, no := range run.orders {
		switch c := rows[no]; {
		case c > 1:
			twice.add(fmt.Sprintf("%s: %d refunds", no, c))
		case c == 0 && run.status[i] == http.StatusCreated:
			missing.add(no)
		}
		if run.status[i] != http.StatusCreated {
			continue
		}
		if n := executed(run.refundNo[i]); n != 1 {
			paid.add(fmt.Sprintf("%s (%q) executed %d times", no, run.refundNo[i], n))
		}
	}
	problems := missing.note(nil, "refunds answered 201 are not in the ledger")
	problems = twice.note(problems, "orders have more than one refund")
	return paid.note(problems, "refunds answered 201 were not executed exactly once by WeChat Pay")
}

// checkRefundRun reads the refunds of a stage's orders and checks them.
func (l *ledgerReader) checkRefundRun(ctx context.Context, e *env, name string, run *refundRun) Check {
	c := Check{Name: name, Found: fmt.Sprintf("%d of %d answered 201, %d answered 202", run.count(http.StatusCreated),
		len(run.orders), run.count(http.StatusAccepted))}
	rows, err := l.rowsPerOrder(ctx, "refunds", "", run.prefix)
	if err != nil {
		c.Problems = []string{err.Error()}
		return c
	}
	c.Found += fmt.Sprintf("; %d refunds in the ledger", sumValues(rows))
	c.Problems = checkRefunds(rows, run, e.sim.RefundCount)
	return c
}

func sumValues(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}
