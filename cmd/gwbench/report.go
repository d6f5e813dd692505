package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"text/tabwriter"
	"time"
)

func ms(d time.Duration) string { return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond)) }

func us(d time.Duration) string { return fmt.Sprintf("%.0fµs", float64(d)/float64(time.Microsecond)) }

func failNote(r Result) string {
	if r.Failed == 0 {
		return ""
	}
	return fmt.Sprintf(" (%d failed: %.80s)", r.Failed, r.FirstErr)
}

// printReport writes one backend's figures as an aligned table.
func printReport(w io.Writer, r BackendReport) {
	fmt.Fprintf(w, "\n== %s (%s)\n", r.Name, r.DBVersion)
	if bad := r.Invalid(); len(bad) > 0 {
		fmt.Fprintf(w, "RUN INVALID: %s; no figure below is a pass:\n  %s\n", invalidWhy, strings.Join(bad, "\n  "))
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "conc\tnew/s\tnew p50\tnew p99\tceiling/s\tceil p50\tceil p99\tgrouped/s\tgrp p50\tgrp p99\tratio\tCPU/new\tdup/s\tdup p50\tdup p99\tCPU/dup")
	for _, l := range r.Levels {
		fmt.Fprintf(tw, "%d\t%.0f\t%s\t%s\t%.0f\t%s\t%s\t%.0f\t%s\t%s\t%.2f\t%s\t%.0f\t%s\t%s\t%s\n", l.Concurrency,
			l.New.Rate(), ms(l.New.P50), ms(l.New.P99), l.Ceiling.Rate(), ms(l.Ceiling.P50), ms(l.Ceiling.P99),
			l.Grouped.Rate(), ms(l.Grouped.P50), ms(l.Grouped.P99),
			l.Ratio(), us(l.New.CPUPerOp()), l.Dup.Rate(), ms(l.Dup.P50), ms(l.Dup.P99), us(l.Dup.CPUPerOp()))
	}
	tw.Flush()
	for _, l := range r.Levels {
		for _, x := range []struct {
			what string
			r    Result
		}{{"new", l.New}, {"dup", l.Dup}, {"ceiling", l.Ceiling}, {"grouped ceiling", l.Grouped}} {
			if x.r.Failed > 0 {
				fmt.Fprintf(w, "  conc %d %s:%s\n", l.Concurrency, x.what, failNote(x.r))
			}
		}
	}
	fmt.Fprintf(w, "order: %s\n", orderNote(r.Levels))
	fmt.Fprintf(w, "group commit: %s\n", groupNote(r.Levels))
	fmt.Fprintln(w, "ledger checks:")
	for _, c := range r.Checks {
		fmt.Fprintf(w, "  %s\n", c)
	}
	for _, o := range r.Opens {
		fmt.Fprintf(w, "open loop at %.0f/s offered: %.0f/s done, p50 %s, p99 %s, CPU/callback %s%s%s\n",
			o.Offered, o.Rate(), ms(o.P50), ms(o.P99), us(o.CPUPerOp()), failNote(o.Result), redoNote(o.RedoAge))
	}
	fmt.Fprintf(w, "refund creation: %s\n", r.Refunds)
	fmt.Fprintf(w, "refund creation at WeChat Pay's rate: %s\n", r.RefundsAt)
	fmt.Fprintln(w, "against the targets:")
	for _, v := range verdicts(r) {
		fmt.Fprintf(w, "  %s\n", v)
	}
	fmt.Fprintln(w, "CPU per operation by process:")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, row := range cpuRows(r) {
		fmt.Fprintln(tw, strings.Join(row, "\t"))
	}
	tw.Flush()
}

// cpuRows is the CPU budget of every closed-loop phase: each process's
// CPU per operation, their sum and how busy the machine was. The first
// row is the header.
func cpuRows(r BackendReport) [][]string {
	var names []string
	if len(r.Levels) > 0 {
		for _, p := range r.Levels[0].New.Usage.Procs {
			names = append(names, p.Name)
		}
	}
	rows := [][]string{append(append([]string{"conc", "phase", "ops/s"}, names...), "total", "machine busy")}
	for _, l := range r.Levels {
		for _, x := range []struct {
			what string
			r    Result
		}{{"new", l.New}, {"dup", l.Dup}, {"ceiling", l.Ceiling}, {"grouped ceiling", l.Grouped}} {
			row := []string{fmt.Sprint(l.Concurrency), x.what, fmt.Sprintf("%.0f", x.r.Rate())}
			ok := max(x.r.N-x.r.Failed, 1)
			var total time.Duration
			for _, n := range names {
				c := x.r.Usage.of(n) / time.Duration(ok)
				total += c
				row = append(row, us(c))
			}
			rows = append(rows, append(row, us(total), fmt.Sprintf("%.0f%%", 100*x.r.Usage.Busy)))
		}
	}
	return rows
}

// machine describes where the figures were taken.
func machine(ctx context.Context, o Options) string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	kernel, _ := exec.CommandContext(ctx, "uname", "-sr").Output()
	return fmt.Sprintf("%d × %s, %s, %s, %s/%s", runtime.NumCPU(), model, strings.TrimSpace(string(kernel)),
		runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

// writeMarkdown writes BENCHMARKS.md with every backend's table.
func writeMarkdown(path, cmd, mach string, reps []BackendReport) error {
	var b strings.Builder
	fmt.Fprintf(&b, "# Benchmarks\n\nCommand: `%s` · run %s · machine: %s.\n\n", cmd,
		time.Now().UTC().Format("2006-01-02 15:04 UTC"), mach)
	b.WriteString(benchPreamble)
	for _, r := range reps {
		fmt.Fprintf(&b, "\n## %s (%s)\n\n", r.Name, r.DBVersion)
		if bad := r.Invalid(); len(bad) > 0 {
			fmt.Fprintf(&b, "**RUN INVALID**: %s; no figure below is a pass: %s.\n\n", invalidWhy, strings.Join(bad, "; "))
		}
		b.WriteString("| concurrency | new/s | new p50 | new p99 | ceiling/s | ceiling p50 | ceiling p99 | grouped ceiling/s | grouped p50 | grouped p99 | new ÷ ceiling | gateway CPU/new | dup/s | dup p50 | dup p99 | gateway CPU/dup |\n")
		b.WriteString(strings.Repeat("|---:", 16) + "|\n")
		for _, l := range r.Levels {
			fmt.Fprintf(&b, "| %d | %.0f | %s | %s | %.0f | %s | %s | %.0f | %s | %s | %.2f | %s | %.0f | %s | %s | %s |\n", l.Concurrency,
				l.New.Rate(), ms(l.New.P50), ms(l.New.P99), l.Ceiling.Rate(), ms(l.Ceiling.P50), ms(l.Ceiling.P99),
				l.Grouped.Rate(), ms(l.Grouped.P50), ms(l.Grouped.P99),
				l.Ratio(), us(l.New.CPUPerOp()), l.Dup.Rate(), ms(l.Dup.P50), ms(l.Dup.P99), us(l.Dup.CPUPerOp()))
		}
		fmt.Fprintf(&b, "\nOrder of the runs at each level: %s.\n", orderNote(r.Levels))
		fmt.Fprintf(&b, "\nGroup commit, new notifications: %s.\n", groupNote(r.Levels))
		writeChecks(&b, r.Checks)
		for _, o := range r.Opens {
			fmt.Fprintf(&b, "\nOpen loop (fixed rate, latency from the scheduled send time) at %.0f callbacks/s offered: "+
				"%.0f/s done, p50 %s, p99 %s, gateway CPU %s per callback%s%s.\n",
				o.Offered, o.Rate(), ms(o.P50), ms(o.P99), us(o.CPUPerOp()), failNote(o.Result), redoNote(o.RedoAge))
		}
		fmt.Fprintf(&b, "\nRefund creation: %s.\n", r.Refunds)
		fmt.Fprintf(&b, "\nRefund creation at WeChat Pay's per-merchant rate (open loop): %s.\n", r.RefundsAt)
		b.WriteString("\nAgainst the targets (below):\n\n")
		for _, v := range verdicts(r) {
			fmt.Fprintf(&b, "- %s\n", v)
		}
		b.WriteString("\nCPU per operation by process (user+system, from /proc), and how busy the whole machine was:\n\n")
		for i, row := range cpuRows(r) {
			fmt.Fprintf(&b, "| %s |\n", strings.Join(row, " | "))
			if i == 0 {
				b.WriteString(strings.Repeat("|---:", len(row)) + "|\n")
			}
		}
		for _, l := range r.Levels {
			for _, x := range []Result{l.New, l.Dup, l.Ceiling, l.Grouped} {
				if x.Failed > 0 {
					fmt.Fprintf(&b, "\nAt concurrency %d some operations failed:%s\n", l.Concurrency, failNote(x))
				}
			}
		}
	}
	b.WriteString(benchTargets)
	b.WriteString(keptSection(path))
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

// invalidWhy is why a run with a failed ledger check is invalid.
const invalidWhy = "the gateway's database does not match what it answered"

// orderNote tells which ran first at each level, e.g. "8 clients: gateway
// (new, dup), then ceilings (one commit each, grouped); 32 clients:
// ceilings (one commit each, grouped), then gateway (new, dup)".
func orderNote(levels []Level) string {
	parts := make([]string, len(levels))
	for i, l := range levels {
		parts[i] = fmt.Sprintf("%d clients: gateway (new, dup), then ceilings (one commit each, grouped)", l.Concurrency)
		if l.CeilingFirst {
			parts[i] = fmt.Sprintf("%d clients: ceilings (one commit each, grouped), then gateway (new, dup)", l.Concurrency)
		}
	}
	return strings.Join(parts, "; ")
}

// groupNote tells, at each level, how many transactions the gateway
// (from its gateway_notify_batch_size) and the grouped ceiling made of
// their notifications, e.g. "8 clients: gateway 4000 notifications in
// 1300 transactions (3.1 each), grouped ceiling 4000 in 1212 (3.3 each)".
func groupNote(levels []Level) string {
	parts := make([]string, len(levels))
	for i, l := range levels {
		parts[i] = fmt.Sprintf("%d clients: gateway %s, grouped ceiling %s", l.Concurrency,
			txnsNote(l.New, " notifications", " transactions"), txnsNote(l.Grouped, "", ""))
	}
	return strings.Join(parts, "; ")
}

// txnsNote renders r's successes and transactions, e.g. "4000 in 1212 (3.3 each)".
func txnsNote(r Result, notes, txns string) string {
	ok := r.N - r.Failed
	if r.Txns <= 0 {
		return fmt.Sprintf("%d%s in transactions not counted", ok, notes)
	}
	return fmt.Sprintf("%d%s in %d%s (%.1f each)", ok, notes, r.Txns, txns, float64(ok)/float64(r.Txns))
}

// writeChecks lists the ledger checks as Markdown.
func writeChecks(b *strings.Builder, checks []Check) {
	b.WriteString("\nLedger checks (the gateway's database against its answers, after each phase):\n\n")
	for _, c := range checks {
		fmt.Fprintf(b, "- %s\n", c)
	}
}

// chaosHeading starts the hand-written verdicts and the chaos run (from
// `make chaos`) in files written before the session sections existed.
const chaosHeading = "\n## Verdict"

// targetsHeading ends the generated part of BENCHMARKS.md: every section
// after its own (session notes, verdicts, the chaos run) is hand-written,
// and a new benchmark keeps it.
const targetsHeading = "\n## Targets (2-core machine)\n"

// keptSection returns the hand-written part of the existing file at path:
// everything from the first section after the targets, or, in a file
// without them, from the first verdict.
func keptSection(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	old := string(b)
	if i := strings.Index(old, targetsHeading); i >= 0 {
		rest := old[i+len(targetsHeading):]
		if j := strings.Index(rest, "\n## "); j >= 0 {
			return rest[j:]
		}
		return ""
	}
	if i := strings.Index(old, chaosHeading); i >= 0 {
		return old[i:]
	}
	return ""
}

const benchPreamble = `What is measured (all over real HTTP against the gateway binary as a child process):

- **new**: first delivery of a signed, encrypted TRANSACTION.SUCCESS notification (verify the signature, the
  gate's Redis call (nonce, committed mark, lock), decrypt, record notification + payment + history + outbox
  job, answer 204 after the commit, then mark it committed), closed loop. Notifications that arrive while the
  ledger is busy share a transaction (group commit, see README).
- **dup**: redelivery of the notifications the new phase answered 2xx (same id, fresh nonce and signature, as
  WeChat redelivers; each 3 times), closed loop: the signature is verified and the gate answers from the
  committed mark. One the new phase did not answer 2xx is not sent again: it may never have been recorded,
  and would then be a first delivery.
- **ceiling**: no gateway — bare database/sql transactions doing the same writes (insert notification,
  payment, state_history and an inventory outbox job, with the values the gateway writes) at the same
  concurrency, on an empty database of the same kind, with the gateway's driver settings and pool (on
  MariaDB at most 50 connections, where the gateway's notifications use its few notification connections).
  The durability settings both run under are on the backend's heading. Two ways: **ceiling** commits each
  notification on its own; **grouped ceiling** commits them in the transactions the gateway's group commit
  makes (the gateway's own batching code and policy, notify.batch_workers 2, batch_max 32, batch_spill 4,
  or what GWBENCH_GATEWAY_ENV sets; one multi-row INSERT per table, as the gateway's batch writes). The
  gateway commits notifications that arrive together in one transaction, so one commit per notification
  is more commits than the gateway makes, and a ratio over it alone would credit the gateway with what
  batching saves. **new ÷ ceiling** is over the higher of the two, the most a bare database did the same
  writes in; the first open loop runs at the best such ceiling when it is below -rate. The verdicts also
  give the ratios over one commit per notification alone and, from one more open loop at the best
  one-commit ceiling's rate, the p99 there: what runs before the grouped ceiling judged. A line under each
  table gives how many transactions the gateway (from its gateway_notify_batch_size) and the grouped
  ceiling made of each level's new notifications. gwbench runs
  without an inventory service, so the later delivery of each outbox job (a claim and an update per job)
  is not in these figures; the chaos run covers it.
- **order**: the ceilings and the gateway share the database server (MariaDB) or the disk (SQLite), and
  whichever runs second inherits the first one's unflushed pages and checkpoint debt. So the order
  alternates: at the 1st, 3rd, … level the gateway's phases (new, then dup) run first and the ceilings
  (one commit each, then grouped) after them; at the 2nd, 4th, … the ceilings run first. The line under
  each table gives each level's order.
- **ledger checks**: after each phase gwbench reads the gateway's own database. Every notification answered
  2xx must have exactly one row in each of notifications, payments (state SUCCESS), state_history and
  outbox_jobs; no order may have some of these rows without the others, or rows it was never sent; the
  duplicates must change none of them. (A notification answered otherwise may have been committed anyway;
  that is counted, not failed.) Only a 201 counts as a created refund (a 202, outcome unknown, is counted
  apart); each must be in the ledger's refunds once and executed once by WeChat Pay (the simulator). A run
  that fails a check is invalid: gwbench says so, exits non-zero and does not write this file.
- **gateway CPU**: user+system CPU of the gateway process (from /proc/<pid>/stat) per callback; on MariaDB
  it excludes the database's, Redis's and the driver's CPU. SQLite runs inside the process that opens it, so
  on SQLite the gateway's CPU includes the database engine's, and the ceiling's shows as the driver's. The CPU table under each backend gives every process's share
  (gateway, MariaDB, Redis, and the driver with its in-process simulators) and how busy the machine was
  (from /proc/stat): a phase near 100% busy is bound by the machine's two cores.
- The driver signs every notification and encodes every request before a timed phase, and sends them over
  kept-alive connections with its own minimal HTTP/1.1 client (like wrk), so that its own CPU stays small.
- **refund creation**: POST /v1/refunds, one per paid order (10 fen of 1000), each with a user JWT (HS256)
  for the order's payer and its own Idempotency-Key, closed loop at the highest concurrency level; the
  gateway records the refund and calls WeChat Pay's refund API (the simulator, in the driver's process)
  before answering. Each refund costs two RSA-2048 signatures (the gateway signs its request, the simulator
  signs its answer, as WeChat Pay does); the machine line above gives what one costs here. A second set of
  refunds is then offered open loop at 150/s, the most WeChat Pay accepts from one merchant (and more than the
  gateway's default rate_limit.refund_calls_per_minute of 6,000 lets through; the benchmark lifts that
  limit): "done" at 150/s means the gateway keeps up with all a merchant can send.
- MySQL runs use a fresh database on the local MariaDB and the local Redis; SQLite runs use a temp file and
  no Redis. The benchmark driver shares the machine's cores with the gateway and the database.
`

const benchTargets = targetsHeading + `
New notifications ≥ 0.8 × ceiling; p99 < 50 ms at 5,000 callbacks/s offered (or at the ceiling if lower);
duplicates ≥ 20,000/s; refund creation ≥ 1,000/s.
`

// redoNote tells how much redo log an open loop began with: the nearer
// InnoDB's limit, the sooner it must flush before it writes (see
// BENCHMARKS.md, session 19).
func redoNote(age int64) string {
	if age < 0 {
		return ""
	}
	return fmt.Sprintf("; InnoDB checkpoint age at the start %.0f MB", float64(age)/(1<<20))
}
