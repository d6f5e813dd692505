package main

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"paygateway/gateway/wechatpay/wxpaysim"
	"paygateway/ledger"
	"paygateway/ledger/ledgertest"
)

// TestCheckRefundNotificationsStoredBeforeThe2xx: a refund notification
// WeChat Pay got a 2xx for is lost unless the ledger stored it by the
// 2xx, whether the refund is the ledger's (the janitor's query settles it
// all the same) or was made outside the gateway (nothing else tells of it).
// Only "accepted-but-lost refund notifications" sees the loss, of one
// stored just after its 2xx too, dated by the merchant before it (when
// it came): the ledger did not have it when the 2xx came.
func TestCheckRefundNotificationsStoredBeforeThe2xx(t *testing.T) {
	store := ledgertest.OpenMySQL(t)
	keys, err := wxpaysim.GenerateKeys("1900000109", "wxapp")
	if err != nil {
		t.Fatal(err)
	}
	const lost, dr, wx, idle = "accepted-but-lost refund notifications", "double refunds",
		"ledger disagrees with WeChat Pay", "checks without evidence"
	// Every case has a refund notification acked: one gap in the evidence
	// less. RX is unknown to the ledger, whatever becomes of its notification.
	outside := func(lostToo int) map[string]int { return map[string]int{dr: 2, wx: 1, lost: lostToo, idle: -1} }
	for _, tc := range []struct {
		name     string
		inLedger bool // refund R5 made through the gateway, or RX made outside it
		stored   bool // the merchant stores the notification before its 2xx
		late     bool // yet its row is dated a second after the 2xx
		after    bool // it stores it just after its 2xx, dated as when it came
		want     map[string]int
		says     []string
	}{
		{"outside the gateway, stored", false, true, false, false, outside(0), nil},
		{"outside the gateway, never stored", false, false, false, false, outside(1), []string{"REFUND.SUCCESS of RX (notification "}},
		{"outside the gateway, stored after the 2xx", false, true, true, false, outside(1), []string{"2xx before it was in the ledger"}},
		{"the ledger's, stored", true, true, false, false, map[string]int{idle: -1}, nil},
		{"the ledger's, never stored, settled by a query", true, false, false, false, map[string]int{lost: 1, idle: -1},
			[]string{"REFUND.SUCCESS of R5 (notification "}},
		{"the ledger's, stored just after the 2xx", true, true, false, true, map[string]int{lost: 1, idle: -1},
			[]string{"not there right after the 2xx"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newSimWorld(t, store, keys)
			healthy := w.check(t)
			no := "RX"
			if tc.inLedger {
				no = "R5"
				w.record(t, "K5", no, 50)
			}
			m := &refundMerchant{w: w, no: no, stores: tc.stored, after: tc.after}
			w.client = w.newClient(t, m.serve(t))
			w.execute(t, no, 50)
			id := w.ackedNotification(t, no)
			m.late.Wait()
			if tc.after { // dated as when it came, before its 2xx
				w.exec(t, "UPDATE notifications SET received_at = received_at - INTERVAL 1 SECOND WHERE notify_id = '"+id+"'")
			}
			if tc.inLedger && !tc.stored {
				w.settle(t, no, "") // the janitor's query repairs the refund, not the notification
			}
			if tc.inLedger {
				w.release(t, no, 50)
			}
			if tc.late {
				w.exec(t, "UPDATE notifications SET received_at = received_at + INTERVAL 1 SECOND WHERE notify_id = '"+id+"'")
			}
			m.noErrors(t)
			assertRises(t, healthy, w.check(t), tc.want, tc.says)
		})
	}
}

// refundMerchant answers WeChat Pay's notifications of refund no 204; if
// stores, it first stores each in the ledger as the gateway does (with
// after, only once WeChat Pay recorded the 204, in late).
type refundMerchant struct {
	w      *simWorld
	no     string
	stores bool
	after  bool
	late   sync.WaitGroup
	mu     sync.Mutex
	errs   []error
}

// serve starts the merchant's endpoint and returns its URL.
func (m *refundMerchant) serve(t *testing.T) string {
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		var n struct {
			ID        string `json:"id"`
			EventType string `json:"event_type"`
		}
		err := json.NewDecoder(r.Body).Decode(&n)
		if err == nil && m.stores && m.after {
			m.late.Go(func() {
				if !m.w.acked(m.no) {
					m.fail(errors.New("no notification acked"))
				} else if err := m.w.storeNotice(m.no, n.ID, n.EventType); err != nil {
					m.fail(err)
				}
			})
		} else if err == nil && m.stores {
			err = m.w.storeNotice(m.no, n.ID, n.EventType)
		}
		if err != nil {
			m.fail(err)
			rw.WriteHeader(http.StatusInternalServerError)
			return
		}
		rw.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

func (m *refundMerchant) fail(err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.errs = append(m.errs, err)
}

func (m *refundMerchant) noErrors(t *testing.T) {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, err := range m.errs {
		t.Errorf("merchant: %v", err)
	}
}

// storeNotice applies notification id (event) of refund no to the ledger,
// with WeChat Pay's view of the refund, as the gateway's handler does; one
// of a refund the ledger lacks is stored and flagged.
func (w *simWorld) storeNotice(no, id, event string) error {
	var r wxpaysim.RefundRecord
	for _, rec := range w.sim.Refunds() {
		if rec.OutRefundNo == no {
			r = rec
		}
	}
	_, err := w.store.ApplyRefund(w.ctx, ledger.RefundUpdate{OutRefundNo: no, State: ledger.RefundState(r.Status),
		RefundID: r.RefundID, TransactionID: r.TransactionID, Amount: r.Amount, SuccessTime: r.SuccessTime,
		Source: ledger.SourceCallback, Ref: id, Notice: &ledger.Notice{NotifyID: id, Source: ledger.SourceCallback,
			EventType: event, ResourceType: "encrypt-resource", OutTradeNo: r.OutTradeNo, TransactionID: r.TransactionID,
			OutRefundNo: no, Plaintext: "{}"}})
	if errors.Is(err, ledger.ErrNotFound) {
		return nil
	}
	return err
}

// acked waits up to 5 s until WeChat Pay got a 2xx for a notification of
// refund no, and reports whether it did.
func (w *simWorld) acked(no string) bool {
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		for _, r := range w.sim.Refunds() {
			if r.OutRefundNo == no && len(r.NotifyAcks) > 0 {
				return true
			}
		}
	}
	return false
}

// ackedNotification waits until WeChat Pay got a 2xx for a notification of
// refund no and returns its id.
func (w *simWorld) ackedNotification(t *testing.T, no string) string {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		for _, r := range w.sim.Refunds() {
			if r.OutRefundNo == no && len(r.NotifyAcks) > 0 {
				return r.NotifyAcks[0].NotifyID
			}
		}
	}
	t.Fatalf("no notification of %s acked", no)
	return ""
}

// TestCheckWantsRefundAcksWatched: a run whose refund notifications were
// acked but never looked for in the ledger as their 2xx came (the
// simulator's OnRefundAck not wired to the checker) proves nothing about
// notifications stored only after their 2xx.
func TestCheckWantsRefundAcksWatched(t *testing.T) {
	keys, err := wxpaysim.GenerateKeys("1900000109", "wxapp")
	if err != nil {
		t.Fatal(err)
	}
	w := newSimWorld(t, ledgertest.OpenMySQL(t), keys)
	w.record(t, "K5", "R5", 50)
	m := &refundMerchant{w: w, no: "R5", stores: true}
	w.client = w.newClient(t, m.serve(t))
	w.execute(t, "R5", 50)
	w.ackedNotification(t, "R5")
	w.release(t, "R5", 50)
	m.noErrors(t)
	watched := w.check(t)
	w.acks = nil
	assertRises(t, watched, w.check(t), map[string]int{"checks without evidence": 1},
		[]string{"no refund notification's 2xx was checked against the ledger as it came"})
}
