package main

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"paygateway/gateway"
	"paygateway/ledger"
)

// ceiling does, with database/sql and no gateway, the writes new payment
// notifications cost: insert the notification, the payment, its history
// row and its inventory outbox job, with the values the gateway writes.
// It runs two ways: one transaction per notification (op), and the
// transactions the gateway's group commit makes (grouped). The gateway
// commits notifications that arrive together in one transaction, so a
// ceiling of one commit per notification does more commits than the
// gateway at any concurrency where its batches fill: alone it is not the
// most the gateway could reach, and a ratio over it flatters the gateway.
type ceiling struct {
	db     *sql.DB
	prefix string
}

// op writes notification i in a transaction of its own.
func (c *ceiling) op(i int) error { return c.write([]int{i}) }

// write writes notifications is in one transaction, one multi-row INSERT
// per table, as the gateway's batch does (ledger.Store.ApplyTransactions;
// for one notification it writes the same rows one statement each). The
// gateway also reads in that transaction (the payments FOR UPDATE, and
// anomalies for a refund reported first); the ceiling does not, so it is
// if anything higher than the gateway could reach.
func (c *ceiling) write(is []int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tx, err := c.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	now := time.Now().UTC()
	tables := []struct {
		head string
		row  func(no string) []any
	}{
		{`INSERT INTO notifications (notify_id, source, event_type, resource_type, summary, out_trade_no,
			transaction_id, plaintext, create_time, received_at) VALUES `, func(no string) []any {
			return []any{"n-" + no, ledger.SourceCallback, "TRANSACTION.SUCCESS", "encrypt-resource", "支付成功", no,
				"42" + no, plaintextFor(no), now, now}
		}},
		{`INSERT INTO payments (out_trade_no, transaction_id, state, registered, amount_total, payer_total,
			currency, payer_openid, appid, mchid, success_time, version, created_at, updated_at) VALUES `, func(no string) []any {
			return []any{no, "42" + no, string(ledger.PaymentSuccess), false, 100, 100, "CNY", "o-" + no, "wxapp",
				"1900000109", now, 0, now, now}
		}},
		{`INSERT INTO state_history (entity, entity_key, out_trade_no, from_state, to_state, source, ref, created_at)
			VALUES `, func(no string) []any {
			return []any{ledger.EntityPayment, no, no, string(ledger.PaymentNone), string(ledger.PaymentSuccess),
				ledger.SourceCallback, "n-" + no, now}
		}},
		{`INSERT INTO outbox_jobs (kind, job_key, out_trade_no, payload, state, next_run_at, created_at, updated_at)
			VALUES `, func(no string) []any {
			return []any{ledger.JobConfirmInventory, "confirm:" + no, no,
				`{"key":"confirm:` + no + `","out_trade_no":"` + no + `","amount_total":100}`, ledger.JobPending,
				now, now, now}
		}},
	}
	for _, t := range tables {
		var q strings.Builder
		q.WriteString(t.head)
		var args []any
		for k, i := range is {
			row := t.row(orderNo(c.prefix, i))
			if k > 0 {
				q.WriteString(",")
			}
			q.WriteString("(" + strings.TrimSuffix(strings.Repeat("?,", len(row)), ",") + ")")
			args = append(args, row...)
		}
		if _, err := tx.ExecContext(ctx, q.String(), args...); err != nil {
			return err
		}
	}
	return tx.Commit()
}

// grouped runs the writes of notifications 0..n-1 from c clients, as
// closedLoop does, each client waiting for the commit of its own; the
// transactions are the ones the gateway's group commit makes
// (gateway.RunBatches with its policy): a notification that finds a
// worker idle goes alone, those arriving while the workers are busy share
// the next transaction, at most policy.Max in one.
func (c *ceiling) grouped(n, clients int, policy gateway.BatchPolicy) Result {
	type item struct {
		i    int
		done chan error
	}
	in, quit := make(chan *item), make(chan struct{})
	var txns atomic.Int64
	wg := gateway.RunBatches(in, quit, policy, func(items []*item) {
		is := make([]int, len(items))
		for k, it := range items {
			is[k] = it.i
		}
		err := c.write(is)
		if err == nil {
			txns.Add(1)
		}
		for _, it := range items {
			it.done <- err
		}
	})
	r := closedLoop(n, clients, func(i int) error {
		it := &item{i: i, done: make(chan error, 1)}
		in <- it
		return <-it.done
	})
	close(quit)
	wg.Wait()
	r.Txns = int(txns.Load())
	return r
}

// defaultBatchPolicy is the gateway's group commit when nothing sets it:
// cmd/gateway's DefaultConfig().Notify (batch_workers 2, batch_max 32,
// batch_spill 4, as configs/gateway.yaml shows).
var defaultBatchPolicy = gateway.BatchPolicy{Workers: 2, Max: 32, Spill: 4}

// gatewayBatchPolicy is the group commit of the gateway gwbench starts:
// the default, with what its extra environment (GWBENCH_GATEWAY_ENV's
// fields) sets through GATEWAY_NOTIFY_BATCH_WORKERS, _MAX and _SPILL.
func gatewayBatchPolicy(env []string) (gateway.BatchPolicy, error) {
	p := defaultBatchPolicy
	for _, kv := range env {
		name, value, _ := strings.Cut(kv, "=")
		var field *int
		switch name {
		case "GATEWAY_NOTIFY_BATCH_WORKERS":
			field = &p.Workers
		case "GATEWAY_NOTIFY_BATCH_MAX":
			field = &p.Max
		case "GATEWAY_NOTIFY_BATCH_SPILL":
			field = &p.Spill
		default:
			continue
		}
		v, err := strconv.Atoi(value)
		if err != nil {
			return p, fmt.Errorf("GWBENCH_GATEWAY_ENV: %s: %w", kv, err)
		}
		*field = v
	}
	return p, nil
}

// gatewayEnv is what GWBENCH_GATEWAY_ENV adds to the gateway's
// environment (e.g. "GOMAXPROCS=1 GATEWAY_NOTIFY_BATCH_WORKERS=4"), for
// experiments.
func gatewayEnv() []string { return strings.Fields(os.Getenv("GWBENCH_GATEWAY_ENV")) }

// plaintextFor is a decrypted resource of realistic size.
func plaintextFor(no string) string {
	return `{"appid":"wxapp","mchid":"1900000109","out_trade_no":"` + no + `","transaction_id":"42` + no +
		`","trade_type":"JSAPI","trade_state":"SUCCESS","trade_state_desc":"支付成功","bank_type":"OTHERS",` +
		`"attach":"","success_time":"2026-01-01T10:00:00+08:00","payer":{"openid":"o-` + no +
		`"},"amount":{"total":100,"payer_total":100,"currency":"CNY","payer_currency":"CNY"}}`
}

// batchTally is what the gateway's group commit applied: notifications,
// and the transactions they took.
type batchTally struct{ notes, txns float64 }

// parseBatches reads gateway_notify_batch_size from a /metrics answer. A
// "batched" observation is one transaction of _sum/_count notifications
// each; a "single" one of size k is k transactions (a batch that fell back
// applies each update on its own).
func parseBatches(text string) batchTally {
	var t batchTally
	for _, line := range strings.Split(text, "\n") {
		name, value, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil {
			continue
		}
		switch name {
		case `gateway_notify_batch_size_count{mode="batched"}`:
			t.txns += v
		case `gateway_notify_batch_size_sum{mode="batched"}`:
			t.notes += v
		case `gateway_notify_batch_size_sum{mode="single"}`:
			t.notes += v
			t.txns += v
		}
	}
	return t
}

// scrapeBatches reads the gateway's group-commit tally from its /metrics
// (with the ops key).
func scrapeBatches(base, key string) (batchTally, error) {
	req, err := http.NewRequest(http.MethodGet, base+"/metrics", nil)
	if err != nil {
		return batchTally{}, err
	}
	req.Header.Set("Authorization", "Bearer "+key)
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		return batchTally{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return batchTally{}, err
	}
	if resp.StatusCode != http.StatusOK {
		return batchTally{}, fmt.Errorf("GET /metrics: status %d", resp.StatusCode)
	}
	return parseBatches(string(body)), nil
}
