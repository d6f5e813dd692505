package main

import (
	"context"
	"database/sql"
	"time"
)

// ceiling does, with database/sql and no gateway, the writes one new
// payment notification costs: insert the notification, the payment, its
// history row and its inventory outbox job, in one transaction. Its
// throughput is the most the gateway could reach on this database.
type ceiling struct {
	db     *sql.DB
	prefix string
}

func (c *ceiling) op(i int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tx, err := c.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	now := time.Now().UTC()
	no := orderNo(c.prefix, i)
	stmts := []struct {
		q    string
		args []any
	}{
		{`INSERT INTO notifications (notify_id, source, event_type, resource_type, summary, out_trade_no,
			transaction_id, plaintext, create_time, received_at) VALUES (?,?,?,?,?,?,?,?,?,?)`,
			[]any{"n-" + no, "callback", "TRANSACTION.SUCCESS", "encrypt-resource", "支付成功", no, "42" + no,
				plaintextFor(no), now, now}},
		{`INSERT INTO payments (out_trade_no, transaction_id, state, registered, amount_total, payer_total,
			currency, payer_openid, appid, mchid, success_time, version, created_at, updated_at)
			VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)`,
			[]any{no, "42" + no, "SUCCESS", false, 100, 100, "CNY", "o-" + no, "wxapp", "1900000109", now, 0, now, now}},
		{`INSERT INTO state_history (entity, entity_key, out_trade_no, from_state, to_state, source, ref, created_at)
			VALUES (?,?,?,?,?,?,?,?)`, []any{"payment", no, no, "NONE", "SUCCESS", "callback", "n-" + no, now}},
		{`INSERT INTO outbox_jobs (kind, job_key, out_trade_no, payload, state, next_run_at, created_at, updated_at)
			VALUES (?,?,?,?,?,?,?,?)`, []any{"inventory_confirm", "confirm:" + no, no,
			`{"out_trade_no":"` + no + `","amount_total":100}`, "PENDING", now, now, now}},
	}
	for _, s := range stmts {
		if _, err := tx.ExecContext(ctx, s.q, s.args...); err != nil {
			return err
		}
	}
	return tx.Commit()
}

// plaintextFor is a decrypted resource of realistic size.
func plaintextFor(no string) string {
	return `{"appid":"wxapp","mchid":"1900000109","out_trade_no":"` + no + `","transaction_id":"42` + no +
		`","trade_type":"JSAPI","trade_state":"SUCCESS","trade_state_desc":"支付成功","bank_type":"OTHERS",` +
		`"attach":"","success_time":"2026-01-01T10:00:00+08:00","payer":{"openid":"o-` + no +
		`"},"amount":{"total":100,"payer_total":100,"currency":"CNY","payer_currency":"CNY"}}`
}
