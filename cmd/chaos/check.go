package main

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"paygateway/gateway/inventory/inventorysim"
	"paygateway/gateway/wechatpay/wxpaysim"
	"paygateway/ledger"
)

// Invariant is one line of the checker's verdict: Count must be 0.
type Invariant struct {
	Name     string
	Count    int
	Examples []string
}

// Evidence is what the checker compares: the ledger, both simulators and
// what the driver and the refund storm saw.
type Evidence struct {
	DB             *sql.DB
	Sim            *wxpaysim.Sim
	Inv            *inventorysim.Sim
	Accepted       map[string]string // notify id → out_trade_no answered 2xx
	Uncommitted    []string          // orders answered 2xx whose notification was not in the ledger right after
	ForgedOrders   []string
	ForgedAccepted int // forged deliveries answered 2xx
	ForgedRefused  int // forged deliveries answered 401 ESIGNATURE
	// ForgedWrongReason: forged deliveries that got no 401 ESIGNATURE
	// (refused for another reason, never answered, never built or never
	// sent): the run then proves nothing about the signature check. With
	// ForgedAccepted 0 and this empty, every forged order was refused by it.
	ForgedWrongReason []string
	Storm             *storm // the refund storm's requests and answers
	// RefundsRefused: WeChat Pay's own refusals of refund applications by
	// reason (wxpaysim.Sim.RefundsRefused).
	RefundsRefused map[string]int
	// RefundAcks: what the ledger held right after each refund
	// notification's 2xx (nil: not watched).
	RefundAcks     *ackWatch
	JobsPending    int    // outbox jobs not DONE after the drain wait
	JobsTotal      int    // outbox jobs written
	JobsStates     string // outbox jobs by state, for the report
	RefundsPending int    // ledger refunds still CREATED, PROCESSING, UNKNOWN or ABNORMAL after the drain wait
	DrainErr       error
	// QueryLagOptional: no refund query needs to have met the query lag
	// (Options.QueryLagEvidence off).
	QueryLagOptional bool
	// FaultFree: the run injected no faults (a soak), so no fault, nor a
	// refund CLOSED or held ABNORMAL by one, is wanted as evidence.
	FaultFree bool
	Ctx       context.Context
}

// Check runs every invariant. An error means the checker itself could not
// read the ledger.
func Check(ev *Evidence) ([]Invariant, error) {
	checks := []func(*Evidence) (Invariant, error){acceptedButLost, refundNotificationsLost, doubleRefunds,
		doubleConfirmations, resentBlind, stockEffects, overRefunded, ledgerAgreesWithWechat, forgedAccepted, jobsNotDrained,
		refundsNotSettled, idleFeatures}
	var out []Invariant
	for _, c := range checks {
		inv, err := c(ev)
		if err != nil {
			return out, fmt.Errorf("check %s: %w", inv.Name, err)
		}
		out = append(out, inv)
	}
	return out, nil
}

func acceptedButLost(ev *Evidence) (Invariant, error) {
	inv := Invariant{Name: "accepted-but-lost notifications"}
	ids := make([]string, 0, len(ev.Accepted))
	for id := range ev.Accepted {
		ids = append(ids, id)
	}
	stored, err := existing(ev, "SELECT notify_id FROM notifications WHERE notify_id IN ", ids)
	if err != nil {
		return inv, err
	}
	var missing []string
	for _, id := range ids {
		if !stored[id] {
			missing = append(missing, ev.Accepted[id])
		}
	}
	paid, err := existing(ev, "SELECT out_trade_no FROM payments WHERE state = 'SUCCESS' AND out_trade_no IN ", missing)
	if err != nil {
		return inv, err
	}
	for _, no := range missing {
		if !paid[no] {
			inv.add(no)
		}
	}
	for _, no := range ev.Uncommitted {
		inv.add(no + " answered 2xx before it was in the ledger")
	}
	return inv, nil
}

// refundNotificationsLost: every refund notification WeChat Pay (the
// simulator, which delivers them itself) got a 2xx for is in the ledger,
// stored by the 2xx (commitSlack, as for payments). The janitor's query
// would settle a refund the ledger has despite a lost notification, but
// nothing repairs one of a refund made outside the gateway, and the
// ledger's refund states alone cannot show either loss.
//
// The row's date is the gateway's: one it wrote just after answering is
// dated within commitSlack of the 2xx, as one written before it is. What
// the ledger held right after the 2xx (RefundAcks, looked at then as the
// driver does for payments) tells them apart.
func refundNotificationsLost(ev *Evidence) (Invariant, error) {
	inv := Invariant{Name: "accepted-but-lost refund notifications"}
	unstored := ev.RefundAcks.unstoredIDs()
	for _, r := range ev.Sim.Refunds() {
		for _, a := range r.NotifyAcks {
			stored, inTime, err := storedBy(ev.Ctx, ev.DB, a.NotifyID, a.At)
			if err != nil {
				return inv, err
			}
			what := fmt.Sprintf("%s of %s (notification %s) answered 2xx", a.EventType, r.OutRefundNo, a.NotifyID)
			switch {
			case !stored:
				inv.add(what + ", not in the ledger")
			case !inTime:
				inv.add(what + " before it was in the ledger")
			case unstored[a.NotifyID]:
				inv.add(what + " before it was in the ledger (not there right after the 2xx)")
			}
		}
	}
	return inv, nil
}

// storedBy reports whether notification id is in the ledger, and whether
// it was stored before a 2xx that came at at (see commitSlack).
func storedBy(ctx context.Context, db *sql.DB, id string, at time.Time) (stored, inTime bool, err error) {
	err = db.QueryRowContext(ctx, `SELECT COUNT(*) > 0, COALESCE(SUM(received_at <= ?), 0) > 0
		FROM notifications WHERE notify_id = ?`, at.Add(commitSlack).UTC(), id).Scan(&stored, &inTime)
	return stored, inTime, err
}

// ackWatch looks in the ledger right after each refund notification
// WeChat Pay (the simulator, wxpaysim.Options.OnRefundAck) got a 2xx for,
// as the driver does after a payment's (checkCommitted). A look the
// database could not answer (MariaDB down) is left to the end-of-run
// check by the row's date, and counted as deferred.
type ackWatch struct {
	db       *sql.DB
	mu       sync.Mutex
	unstored map[string]bool // notify ids not in the ledger right after their 2xx
	checked  int             // looks the database answered
	deferred int             // looks it did not
}

func newAckWatch(db *sql.DB) *ackWatch { return &ackWatch{db: db, unstored: map[string]bool{}} }

// onAck is the simulator's OnRefundAck.
func (a *ackWatch) onAck(_ string, ack wxpaysim.NotifyAck) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	stored, inTime, err := storedBy(ctx, a.db, ack.NotifyID, ack.At)
	a.mu.Lock()
	defer a.mu.Unlock()
	switch {
	case err != nil:
		a.deferred++
	case !stored || !inTime:
		a.unstored[ack.NotifyID] = true
		a.checked++
	default:
		a.checked++
	}
}

// unstoredIDs returns the notify ids not in the ledger right after their 2xx.
func (a *ackWatch) unstoredIDs() map[string]bool {
	if a == nil {
		return nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return maps.Clone(a.unstored)
}

// counts returns how many looks the database answered, and how many it did not.
func (a *ackWatch) counts() (checked, deferred int) {
	if a == nil {
		return 0, 0
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.checked, a.deferred
}

// doubleRefunds: the ledger has at most one refund per idempotency key
// (per order no more refunds than keys, none without a key, every answer
// for a key names the same refund, which the ledger has); WeChat executed
// no refund the ledger does not know, nor one no answer named, and never
// got a refund number again with other parameters. (WeChat itself
// executes an out_refund_no once; the inventory's releases are checked
// under stock effects.)
func doubleRefunds(ev *Evidence) (Invariant, error) {
	inv := Invariant{Name: "double refunds"}
	ledgerRefunds := map[string]bool{}
	rows, err := ev.DB.QueryContext(ev.Ctx, "SELECT out_refund_no FROM refunds")
	if err != nil {
		return inv, err
	}
	for rows.Next() {
		var no string
		if err := rows.Scan(&no); err != nil {
			rows.Close()
			return inv, err
		}
		ledgerRefunds[no] = true
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return inv, err
	}
	for _, r := range ev.Sim.Refunds() {
		if !ledgerRefunds[r.OutRefundNo] {
			inv.add("wechat executed " + r.OutRefundNo + ", unknown to the ledger")
		}
	}
	if n := ev.RefundsRefused["changed_params"]; n > 0 {
		inv.add(fmt.Sprintf("wechat got %d refund numbers again with other parameters", n))
	}
	if err := ledgerDoubleRefunds(ev, &inv); err != nil {
		return inv, err
	}
	stormAnswers(ev.Storm, ledgerRefunds, &inv)
	unexpectedAnswers(ev.Storm, len(ev.RefundsRefused) > 0, &inv)
	unnamedRefunds(ev.Storm, ev.Sim.Refunds(), &inv)
	return inv, nil
}

// unnamedRefunds: every refund WeChat executed was named to a client by
// some idempotency key's answer. A second refund made under one key and
// never shown, or a key answered 409 whose refund was paid, shows here;
// the ledger's counts cannot see it while the order has keys to spare.
func unnamedRefunds(s *storm, executed []wxpaysim.RefundRecord, inv *Invariant) {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	named := map[string]bool{}
	for _, nos := range s.answers {
		for no := range nos {
			named[no] = true
		}
	}
	for _, r := range executed {
		if !named[r.OutRefundNo] {
			inv.add("wechat executed " + r.OutRefundNo + ", named in no idempotency key's answer")
		}
	}
}

// unexpectedAnswers: every final answer the storm got is one a refund of a
// paid order may get: 201 or 202 (created, or outcome still unknown), 409
// ECONFLICT (the money rule), or, when WeChat Pay itself refused refunds
// (refused), 422. Another (a 404 or 400 for a paid order, say) ends a key
// as final although the gateway should not have given it, and no other
// count would show it.
func unexpectedAnswers(s *storm, refused bool, inv *Invariant) {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, a := range slices.Sorted(maps.Keys(s.status)) {
		switch {
		case strings.HasPrefix(a, "201 "), strings.HasPrefix(a, "202 "), a == "409 ECONFLICT", a == "0 storm deadline":
		case refused && strings.HasPrefix(a, "422 "):
		default:
			inv.add(fmt.Sprintf("%d refund requests answered %q, not an answer a paid order's refund should get", s.status[a], a))
		}
	}
}

// stormAnswers: every idempotency key got a final answer, naming at most
// one refund, and every refund an answer named is in the ledger (an
// accepted refund the gateway lost shows here).
func stormAnswers(s *storm, ledgerRefunds map[string]bool, inv *Invariant) {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		inv.add("the refund storm stopped: " + s.err.Error())
	}
	if s.unrun > 0 {
		inv.add(fmt.Sprintf("%d orders never stormed: the storm ran out of time", s.unrun))
	}
	if n := s.status["0 storm deadline"]; n > 0 {
		inv.add(fmt.Sprintf("%d refund requests got no final answer before the storm's deadline", n))
	}
	for key, nos := range s.answers {
		if len(nos) > 1 {
			inv.add(fmt.Sprintf("idempotency key %s answered with %d different refunds", key, len(nos)))
		}
		for no := range nos {
			if !ledgerRefunds[no] {
				inv.add("refund " + no + " (key " + key + ") was answered, not in the ledger")
			}
		}
	}
}

// ledgerDoubleRefunds counts orders with more refunds than the storm used
// keys, and refunds no idempotency key points to.
func ledgerDoubleRefunds(ev *Evidence, inv *Invariant) error {
	rows, err := ev.DB.QueryContext(ev.Ctx, "SELECT out_trade_no, COUNT(*) FROM refunds GROUP BY out_trade_no")
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var no string
		var n int
		if err := rows.Scan(&no, &n); err != nil {
			return err
		}
		if keys := ev.Storm.keysFor(no); n > keys {
			inv.add(fmt.Sprintf("%s: %d refunds for %d idempotency keys", no, n, keys))
		}
	}
	if err := rows.Err(); err != nil {
		return err
	}
	orphans, err := ev.DB.QueryContext(ev.Ctx, `SELECT r.out_refund_no FROM refunds r
		LEFT JOIN idempotency_keys k ON k.resource_key = r.out_refund_no WHERE k.id IS NULL`)
	if err != nil {
		return err
	}
	defer orphans.Close()
	for orphans.Next() {
		var no string
		if err := orphans.Scan(&no); err != nil {
			return err
		}
		inv.add("refund " + no + " has no idempotency key")
	}
	return orphans.Err()
}

// doubleConfirmations: the inventory confirmed an order more than once,
// or got a key again with another body. (The ledger cannot move a payment
// to SUCCESS twice: state_history's unique key refuses the second row.)
func doubleConfirmations(ev *Evidence) (Invariant, error) {
	inv := Invariant{Name: "double confirmations"}
	if n := ev.Inv.Stats().Mismatches; n > 0 {
		inv.add(fmt.Sprintf("the inventory got %d keys again with another body", n))
	}
	seen := map[string]bool{}
	for _, c := range ev.Inv.Confirmations() {
		if n := ev.Inv.ConfirmCount(c.OutTradeNo); n > 1 && !seen[c.OutTradeNo] {
			seen[c.OutTradeNo] = true
			inv.add(fmt.Sprintf("inventory confirmed %s %d times", c.OutTradeNo, n))
		}
	}
	return inv, nil
}

// resentBlind: the gateway sent the inventory no confirmation or release
// again, nor WeChat Pay a refund application, without first asking
// whether the earlier one took effect and being told "not found"
// (inventorysim.Sim.ResentBlind, wxpaysim.Sim.RefundsResentBlind). Both
// simulators answer a blind resend as the idempotent repeat it is, so
// neither their records nor the ledger show it; a service whose dedup
// had forgotten the key would apply it twice.
func resentBlind(ev *Evidence) (Invariant, error) {
	inv := Invariant{Name: "calls sent again without asking"}
	for _, side := range []struct {
		what   string
		resent map[string]int
	}{{"inventory got ", ev.Inv.ResentBlind()}, {"wechat got refund ", ev.Sim.RefundsResentBlind()}} {
		for _, key := range slices.Sorted(maps.Keys(side.resent)) {
			for range side.resent[key] {
				inv.add(side.what + key + " again, not told \"not found\" by a query since it was sent")
			}
		}
	}
	return inv, nil
}

// stockEffects: the inventory confirmed every paid order and released
// every refund that succeeded, each once and for the ledger's amount, and
// nothing the ledger does not have as paid or refunded. A lost outbox job, or one marked DONE that the
// inventory never applied, shows here; "jobs not drained" cannot see it.
func stockEffects(ev *Evidence) (Invariant, error) {
	inv := Invariant{Name: "stock effects missing or unearned"}
	paid, err := existing(ev, "SELECT out_trade_no FROM payments WHERE state IN ", []string{"SUCCESS"})
	if err != nil {
		return inv, err
	}
	refunded, err := existing(ev, "SELECT out_refund_no FROM refunds WHERE state IN ", []string{"SUCCESS"})
	if err != nil {
		return inv, err
	}
	amounts, err := stockAmounts(ev)
	if err != nil {
		return inv, err
	}
	for range ev.Inv.Stats().Unconfirmed {
		inv.add("inventory released stock of an order before its confirmation")
	}
	skipped, err := skippedConfirmations(ev)
	if err != nil {
		return inv, err
	}
	for no, covered := range skipped {
		if !covered {
			inv.add("the confirmation of " + no + " was skipped, yet its successful refunds do not cover it")
		}
	}
	confirmed := map[string]bool{}
	for _, c := range ev.Inv.Confirmations() {
		confirmed[c.OutTradeNo] = true
		_, unsent := skipped[c.OutTradeNo]
		switch {
		case unsent:
			inv.add("inventory confirmed " + c.OutTradeNo + ", whose confirmation the gateway skipped: its release was skipped too")
		case !paid[c.OutTradeNo]:
			inv.add("inventory confirmed " + c.OutTradeNo + ", not paid in the ledger")
		case c.AmountTotal != amounts["p:"+c.OutTradeNo]:
			inv.add(fmt.Sprintf("inventory confirmed %s for %d fen, paid %d", c.OutTradeNo, c.AmountTotal, amounts["p:"+c.OutTradeNo]))
		}
	}
	// The refunds' orders (in the transaction id column ledgerRows reads).
	orderOf, err := ledgerRows(ev, "SELECT out_refund_no, state, out_trade_no, amount, 0 FROM refunds WHERE state = 'SUCCESS'")
	if err != nil {
		return inv, err
	}
	released := map[string]int{}
	for _, r := range ev.Inv.Releases() {
		released[r.OutRefundNo]++
		switch {
		case released[r.OutRefundNo] == 2: // under two keys: stock given back twice
			inv.add("inventory released " + r.OutRefundNo + " more than once")
		case !refunded[r.OutRefundNo]:
			inv.add("inventory released " + r.OutRefundNo + ", not a successful refund in the ledger")
		case r.OutTradeNo != orderOf[r.OutRefundNo].txid:
			inv.add(fmt.Sprintf("inventory released %s for order %s, the refund is of %s", r.OutRefundNo, r.OutTradeNo,
				orderOf[r.OutRefundNo].txid))
		case r.Amount != amounts["r:"+r.OutRefundNo]:
			inv.add(fmt.Sprintf("inventory released %s for %d fen, refunded %d", r.OutRefundNo, r.Amount, amounts["r:"+r.OutRefundNo]))
		}
	}
	for no := range paid {
		if _, unsent := skipped[no]; !confirmed[no] && !unsent {
			inv.add("paid " + no + " never confirmed by the inventory")
		}
	}
	for no := range refunded {
		if _, unsent := skipped[orderOf[no].txid]; released[no] == 0 && !unsent {
			inv.add("refund " + no + " never released by the inventory")
		}
	}
	return inv, nil
}

// skippedConfirmations returns the orders whose stock confirmation the
// gateway finished unsent (refunded in full before it was first sent;
// only the attempt that settled the job counts), each
// with whether the ledger's successful refunds do cover what was paid.
func skippedConfirmations(ev *Evidence) (map[string]bool, error) {
	rows, err := ev.DB.QueryContext(ev.Ctx, `SELECT c.out_trade_no, COALESCE(p.amount_total, 0) > 0 AND p.amount_total <=
		(SELECT COALESCE(SUM(r.amount), 0) FROM refunds r WHERE r.out_trade_no = c.out_trade_no AND r.state = 'SUCCESS')
		FROM outbox_jobs c JOIN outbox_attempts a ON a.job_id = c.id AND a.attempt = c.attempts
		LEFT JOIN payments p ON p.out_trade_no = c.out_trade_no
		WHERE c.kind = ? AND c.state = 'DONE' AND a.outcome = 'skipped'`, ledger.JobConfirmInventory)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]bool{}
	for rows.Next() {
		var no string
		var covered bool
		if err := rows.Scan(&no, &covered); err != nil {
			return nil, err
		}
		out[no] = covered
	}
	return out, rows.Err()
}

// stockAmounts returns the ledger's amounts: "p:"+out_trade_no the paid
// total, "r:"+out_refund_no the refund's amount.
func stockAmounts(ev *Evidence) (map[string]int64, error) {
	out := map[string]int64{}
	for prefix, q := range map[string]string{
		"p:": "SELECT out_trade_no, state, '', COALESCE(amount_total, 0), 0 FROM payments WHERE state = 'SUCCESS'",
		"r:": "SELECT out_refund_no, state, '', amount, 0 FROM refunds WHERE state = 'SUCCESS'"} {
		rows, err := ledgerRows(ev, q)
		if err != nil {
			return nil, err
		}
		for k, r := range rows {
			out[prefix+k] = r.amount
		}
	}
	return out, nil
}

func overRefunded(ev *Evidence) (Invariant, error) {
	inv := Invariant{Name: "orders with Σrefunds > paid"}
	// A refund of an order the ledger has no payment for was refunded
	// beyond the nothing paid: the join keeps it (an inner one hid it).
	q := `SELECT p.out_trade_no FROM payments p WHERE p.refunded_total > COALESCE(p.amount_total, 0)
		UNION SELECT r.out_trade_no FROM refunds r LEFT JOIN payments p ON p.out_trade_no = r.out_trade_no
		WHERE r.state NOT IN ('CLOSED', 'FAILED') GROUP BY r.out_trade_no, p.amount_total
		HAVING SUM(r.amount) > COALESCE(p.amount_total, 0)`
	rows, err := ev.DB.QueryContext(ev.Ctx, q)
	if err != nil {
		return inv, err
	}
	defer rows.Close()
	for rows.Next() {
		var no string
		if err := rows.Scan(&no); err != nil {
			return inv, err
		}
		inv.add("ledger: " + no)
	}
	// WeChat Pay (the simulator) refuses a refund beyond the order's rest
	// itself, and the gateway then marks it FAILED: only the refusal shows
	// that the gateway's money rule let it through.
	if n := ev.RefundsRefused["over_refund"]; n > 0 {
		inv.add(fmt.Sprintf("wechat refused %d refunds beyond what was left of their order", n))
	}
	return inv, rows.Err()
}

// ledgerAgreesWithWechat: the ledger says what WeChat Pay did, compared
// with the simulator's own records, not with the gateway's claims. Every
// refund WeChat executed has the ledger's amount and, once settled, the
// same final state; a refund the ledger holds SUCCESS was paid; every
// order WeChat has paid is paid in the ledger with its transaction and
// amount, and its refunded total is what WeChat refunded (refunds not
// CLOSED); no order is paid in the ledger that WeChat was not paid for. A
// refund the gateway gave up on (FAILED, CLOSED) that WeChat paid after
// all shows here, and so does one WeChat closed, or resolved after
// holding it ABNORMAL, that the ledger did not follow (a refund ABNORMAL
// at WeChat Pay is compared as settled; in the ledger ABNORMAL is not,
// and the drain waits until none is left); the other invariants read the
// ledger alone.
func ledgerAgreesWithWechat(ev *Evidence) (Invariant, error) {
	inv := Invariant{Name: "ledger disagrees with WeChat Pay"}
	refunds, err := ledgerRows(ev, "SELECT out_refund_no, state, '', amount, 0 FROM refunds")
	if err != nil {
		return inv, err
	}
	paidAtWechat := map[string]bool{}
	for _, r := range ev.Sim.Refunds() {
		paidAtWechat[r.OutRefundNo] = r.Status == wxpaysim.RefundSuccess
		l, ok := refunds[r.OutRefundNo]
		settled := r.Status != wxpaysim.RefundProcessing
		switch {
		case !ok: // counted under double refunds
		case l.amount != r.Amount:
			inv.add(fmt.Sprintf("refund %s: %d fen in the ledger, %d at wechat", r.OutRefundNo, l.amount, r.Amount))
		case settled && l.state != r.Status:
			inv.add(fmt.Sprintf("refund %s: %s in the ledger, %s at wechat", r.OutRefundNo, l.state, r.Status))
		}
	}
	for no, l := range refunds {
		if l.state == "SUCCESS" && !paidAtWechat[no] {
			inv.add("refund " + no + " SUCCESS in the ledger, not paid by wechat")
		}
	}
	payments, err := ledgerRows(ev, `SELECT out_trade_no, state, COALESCE(transaction_id, ''),
		COALESCE(amount_total, 0), refunded_total FROM payments`)
	if err != nil {
		return inv, err
	}
	paidOrders := map[string]bool{}
	for _, o := range ev.Sim.Orders() {
		p, ok := payments[o.OutTradeNo]
		paidOrders[o.OutTradeNo] = o.TransactionID != ""
		switch {
		case o.TransactionID == "": // not paid at wechat
		case !ok || p.state != "SUCCESS":
			inv.add(fmt.Sprintf("%s paid at wechat, %q in the ledger", o.OutTradeNo, p.state))
		case p.txid != o.TransactionID || p.amount != o.Amount:
			inv.add(fmt.Sprintf("%s: ledger %s %d fen, wechat %s %d fen", o.OutTradeNo, p.txid, p.amount, o.TransactionID, o.Amount))
		case p.refunded != o.Refunded:
			inv.add(fmt.Sprintf("%s: %d fen refunded in the ledger, %d at wechat", o.OutTradeNo, p.refunded, o.Refunded))
		}
	}
	for no, p := range payments {
		if p.state == "SUCCESS" && !paidOrders[no] {
			inv.add(no + " SUCCESS in the ledger, not paid at wechat")
		}
	}
	return inv, nil
}

// ledgerRow is one payment or refund as the comparison with WeChat needs it.
type ledgerRow struct {
	state, txid      string
	amount, refunded int64
}

// ledgerRows runs query (key, state, transaction id, amount, refunded)
// and returns its rows by key.
func ledgerRows(ev *Evidence, query string) (map[string]ledgerRow, error) {
	rows, err := ev.DB.QueryContext(ev.Ctx, query)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]ledgerRow{}
	for rows.Next() {
		var key string
		var r ledgerRow
		if err := rows.Scan(&key, &r.state, &r.txid, &r.amount, &r.refunded); err != nil {
			return nil, err
		}
		out[key] = r
	}
	return out, rows.Err()
}

func forgedAccepted(ev *Evidence) (Invariant, error) {
	inv := Invariant{Name: "forged notifications accepted"}
	for range ev.ForgedAccepted {
		inv.add("a forged delivery was answered 2xx")
	}
	for _, r := range ev.ForgedWrongReason {
		inv.add("forged " + r + ": no 401 ESIGNATURE")
	}
	// Every forged order ends one of three ways; one that ended none was
	// lost by the driver, and proves nothing.
	if n := len(ev.ForgedOrders) - ev.ForgedRefused - ev.ForgedAccepted - len(ev.ForgedWrongReason); n != 0 {
		inv.add(fmt.Sprintf("%d forged orders without a recorded end", n))
	}
	for _, q := range []string{"SELECT out_trade_no FROM payments WHERE out_trade_no IN ",
		"SELECT out_trade_no FROM notifications WHERE out_trade_no IN "} {
		found, err := existing(ev, q, ev.ForgedOrders)
		if err != nil {
			return inv, err
		}
		for no := range found {
			inv.add("forged order in the ledger: " + no)
		}
	}
	return inv, nil
}

func jobsNotDrained(ev *Evidence) (Invariant, error) {
	inv := Invariant{Name: "jobs not drained", Count: ev.JobsPending}
	if ev.JobsPending > 0 {
		rows, err := ev.DB.QueryContext(ev.Ctx, `SELECT job_key, state, attempts, last_error FROM outbox_jobs
			WHERE state <> 'DONE' ORDER BY id LIMIT 5`)
		if err != nil {
			return inv, err
		}
		defer rows.Close()
		for rows.Next() {
			var key, state, lastErr string
			var attempts int
			if err := rows.Scan(&key, &state, &attempts, &lastErr); err != nil {
				return inv, err
			}
			inv.Examples = append(inv.Examples, fmt.Sprintf("%s %s after %d attempts: %.120s", key, state, attempts, lastErr))
		}
		if err := rows.Err(); err != nil {
			return inv, err
		}
	}
	return inv, ev.DrainErr
}

// refundsNotSettled: every refund reached a final state (WeChat's
// notification or the janitor's query) within the drain wait. ABNORMAL is
// not one: the simulator resolves every ABNORMAL refund during the run,
// and the ledger must follow.
func refundsNotSettled(ev *Evidence) (Invariant, error) {
	return Invariant{Name: "refunds not settled", Count: ev.RefundsPending}, nil
}

// idleFeatures: a run whose storm made no refund, whose refund
// notifications were never acked or whose outbox never reached the
// inventory proves nothing about them; that is a failure too.
func idleFeatures(ev *Evidence) (Invariant, error) {
	inv := Invariant{Name: "checks without evidence"}
	if err := refundEvidence(ev, &inv); err != nil {
		return inv, err
	}
	if len(ev.ForgedOrders) == 0 {
		inv.add("no forged notification was sent")
	}
	if refundAcks(ev.Sim) == 0 {
		inv.add("no refund notification was answered 2xx")
	} else if checked, _ := ev.RefundAcks.counts(); checked == 0 {
		inv.add("no refund notification's 2xx was checked against the ledger as it came")
	}
	if ev.JobsTotal == 0 {
		inv.add("no outbox job was written")
	}
	if s := ev.Inv.Stats(); s.Posts == 0 {
		inv.add("the inventory simulator got no calls")
	} else if !ev.FaultFree && (s.Errors == 0 || s.ApplyThenTimeouts == 0) {
		inv.add(fmt.Sprintf("the inventory's faults did not all happen: %d errors, %d applied then timed out",
			s.Errors, s.ApplyThenTimeouts))
	}
	f := ev.Sim.FaultsInjected()
	for _, kind := range wechatFaults {
		if f[kind] == 0 && !ev.FaultFree && !(kind == "query_lag" && ev.QueryLagOptional) {
			inv.add(fmt.Sprintf("WeChat Pay's refund faults did not all happen: %v", f))
			break
		}
	}
	return inv, nil
}

// refundAcks counts the refund notifications WeChat Pay got a 2xx for.
func refundAcks(sim *wxpaysim.Sim) int {
	n := 0
	for _, r := range sim.Refunds() {
		n += len(r.NotifyAcks)
	}
	return n
}

// wechatFaults are the kinds Sim.FaultsInjected must show: each fault of
// the refund API, queries that did not yet show a refund (query lag), and
// refunds settled CLOSED or ABNORMAL.
var wechatFaults = []string{"frequency_limited", "5xx", "drop", "apply_then_timeout", "order_unknown",
	"apply_then_forbidden", "query_lag", "closed", "abnormal"}

// refundEvidence: "Σrefunds > paid" proves the money rule only if some
// order got both refunds that fit and a third was refused by the rule
// (409 ECONFLICT); the release checks see nothing without a refund that
// succeeded, the amount given back and the releases withheld by a CLOSED
// refund are untested without one, and a refund WeChat Pay held ABNORMAL
// proves the gateway follows it to its end only once the ledger moved one
// from ABNORMAL to SUCCESS.
func refundEvidence(ev *Evidence, inv *Invariant) error {
	var refunds, succeeded, closed, twice, resolved int
	err := ev.DB.QueryRowContext(ev.Ctx, `SELECT COUNT(*), COALESCE(SUM(state = 'SUCCESS'), 0),
		COALESCE(SUM(state = 'CLOSED'), 0) FROM refunds`).Scan(&refunds, &succeeded, &closed)
	if err == nil {
		err = ev.DB.QueryRowContext(ev.Ctx, `SELECT COUNT(*) FROM (SELECT out_trade_no FROM refunds
			WHERE state = 'SUCCESS' GROUP BY out_trade_no HAVING COUNT(*) >= 2) twice`).Scan(&twice)
	}
	if err == nil {
		err = ev.DB.QueryRowContext(ev.Ctx, `SELECT COUNT(*) FROM state_history
			WHERE entity = 'refund' AND from_state = 'ABNORMAL' AND to_state = 'SUCCESS'`).Scan(&resolved)
	}
	if err != nil {
		return err
	}
	for _, gap := range []struct {
		missing bool
		what    string
	}{
		{refunds == 0, "the refund storm made no refund"},
		{succeeded == 0, "no refund succeeded: nothing for the inventory to release"},
		{twice == 0, "no order got two successful refunds"},
		{closed == 0 && !ev.FaultFree, "no refund CLOSED in the ledger: no amount given back"},
		{resolved == 0 && !ev.FaultFree, "no refund moved from ABNORMAL to SUCCESS in the ledger"},
		{ev.Storm.answered("409 ECONFLICT") == 0, "the money rule refused no refund (no final 409 ECONFLICT)"},
	} {
		if gap.missing {
			inv.add(gap.what)
		}
	}
	return nil
}

func (inv *Invariant) add(example string) {
	inv.Count++
	if len(inv.Examples) < 5 {
		inv.Examples = append(inv.Examples, example)
	}
}

// existing runs query + "(?,?,…)" over keys in batches and returns the
// values of the first column found.
func existing(ev *Evidence, query string, keys []string) (map[string]bool, error) {
	found := map[string]bool{}
	for start := 0; start < len(keys); start += 500 {
		batch := keys[start:min(start+500, len(keys))]
		args := make([]any, len(batch))
		for i, k := range batch {
			args[i] = k
		}
		rows, err := ev.DB.QueryContext(ev.Ctx, query+"("+strings.TrimSuffix(strings.Repeat("?,", len(batch)), ",")+")", args...)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			var v string
			if err := rows.Scan(&v); err != nil {
				rows.Close()
				return nil, err
			}
			found[v] = true
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	return found, nil
}

// PrintInvariants writes the verdict, one line per invariant.
func PrintInvariants(w io.Writer, invs []Invariant) {
	for _, inv := range invs {
		fmt.Fprintf(w, "  %-40s %d\n", inv.Name+":", inv.Count)
		for _, e := range inv.Examples {
			fmt.Fprintln(w, "      e.g.", e)
		}
	}
}
