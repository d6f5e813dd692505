package ledger

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"gorm.io/gorm"
)

// saveReconciliation stores rep as the report of its day if claim still
// holds, and ends the claim. The counts and items replace the earlier
// report's, but a REPAIRED or REFUSED item of the earlier report that this
// run does not find again is kept: a rerun sees a repaired payment as
// SUCCESS and must not erase the record of the repair.
func (s *Store) saveReconciliation(ctx context.Context, claim *ReconcileClaim, rep *Reconciliation) error {
	found := rep.Items[:len(rep.Items):len(rep.Items)] // a retried transaction starts again from these
	err := s.inTx(ctx, func(tx *gorm.DB) error {
		rep.Items = found
		return s.replaceReport(tx, claim, rep)
	})
	if err != nil {
		return fmt.Errorf("store reconciliation %s: %w", rep.Date, err)
	}
	return nil
}

func (s *Store) replaceReport(tx *gorm.DB, claim *ReconcileClaim, rep *Reconciliation) error {
	var row reconciliationRow
	err := lockForUpdate(tx).Where("bill_date = ?", rep.Date).Take(&row).Error
	if errors.Is(err, gorm.ErrRecordNotFound) || (err == nil && !claim.holds(row)) {
		return ErrClaimed
	}
	if err != nil {
		return err
	}
	kept, err := keptItems(tx, row.ID, rep.Items)
	if err != nil {
		return err
	}
	rep.Items = append(rep.Items, kept...)
	rep.tally()
	if err := tx.Where("reconciliation_id = ?", row.ID).Delete(&reconcileItemRow{}).Error; err != nil {
		return err
	}
	now := s.now()
	row.Status, row.BillPayments, row.BillRefunds = rep.Status, rep.BillPayments, rep.BillRefunds
	row.LedgerPayments, row.LedgerRefunds, row.BillPaid, row.BillRefunded = rep.LedgerPayments, rep.LedgerRefunds, rep.BillPaid, rep.BillRefunded
	row.LedgerPaid, row.LedgerRefunded, row.Mismatches, row.Repaired = rep.LedgerPaid, rep.LedgerRefunded, rep.Mismatches, rep.Repaired
	row.RequestedBy, row.UpdatedAt = truncate(rep.RequestedBy, 64), now
	row.ClaimedBy, row.ClaimedUntil = nil, nil
	row.Runs++
	// On the store's clock, not gorm's: ReconciledDays compares updated_at
	// with it (an UNREADABLE report's age).
	if err := tx.Session(&gorm.Session{NowFunc: s.now}).Save(&row).Error; err != nil {
		return err
	}
	items := make([]reconcileItemRow, len(rep.Items))
	for i, it := range rep.Items {
		items[i] = itemRow(row.ID, it)
	}
	if len(items) > 0 {
		if err := tx.CreateInBatches(items, 200).Error; err != nil {
			return err
		}
	}
	rep.Runs, rep.CreatedAt, rep.UpdatedAt = row.Runs, row.CreatedAt.UTC(), row.UpdatedAt.UTC()
	return nil
}

// keptNote starts the detail of an item kept from an earlier run.
const keptNote = "earlier run: "

// keptItems returns the REPAIRED and REFUSED items of the stored report
// that found, this run's items, does not hold again.
func keptItems(tx *gorm.DB, recID uint64, found []ReconcileItem) ([]ReconcileItem, error) {
	var rows []reconcileItemRow
	err := tx.Where("reconciliation_id = ? AND repair IN ?", recID, []string{RepairApplied, RepairRefused}).
		Order("id").Find(&rows).Error
	if err != nil {
		return nil, err
	}
	have := map[string]bool{}
	for _, it := range found {
		have[it.key()] = true
	}
	var kept []ReconcileItem
	for _, r := range rows {
		it := r.item()
		if have[it.key()] {
			continue
		}
		if !strings.HasPrefix(it.RepairDetail, keptNote) {
			it.RepairDetail = truncate(keptNote+it.RepairDetail, itemDetailWidth)
		}
		kept = append(kept, it)
	}
	return kept, nil
}

// key identifies an item across runs.
func (it ReconcileItem) key() string {
	return it.Kind + "\x00" + it.OutTradeNo + "\x00" + it.TransactionID + "\x00" + it.OutRefundNo
}

// Widths of reconciliation_items' text columns on MySQL (migration 0033;
// SQLite's are TEXT). MySQL counts characters, truncate bytes: a cut value
// fits. Kind, repair and the ledger's side fit by construction (constants,
// the ledger's own columns are no wider).
const (
	itemKeyWidth    = 64 // out_trade_no, transaction_id, out_refund_no
	itemStateWidth  = 16 // bill_state
	itemDetailWidth = 512
)

// fitted cuts the item's text from outside (the bill, error texts) to its
// columns, as valid UTF-8: MySQL's strict sql_mode refuses a longer value
// or invalid bytes, which would fail the day's report on every run, the
// bill never changing.
func (it ReconcileItem) fitted() ReconcileItem {
	it.OutTradeNo, it.TransactionID = fit(it.OutTradeNo, itemKeyWidth), fit(it.TransactionID, itemKeyWidth)
	it.OutRefundNo, it.RepairDetail = fit(it.OutRefundNo, itemKeyWidth), fit(it.RepairDetail, itemDetailWidth)
	if it.Bill != nil {
		bill := *it.Bill
		bill.State, bill.Line = fit(bill.State, itemStateWidth), fit(bill.Line, maxBillLine)
		it.Bill = &bill
	}
	return it
}

func fit(s string, n int) string { return truncate(strings.ToValidUTF8(s, "\uFFFD"), n) }

func itemRow(recID uint64, it ReconcileItem) reconcileItemRow {
	it = it.fitted()
	r := reconcileItemRow{ReconciliationID: recID, Kind: it.Kind, OutTradeNo: it.OutTradeNo,
		TransactionID: it.TransactionID, OutRefundNo: it.OutRefundNo, Repair: it.Repair,
		RepairDetail: it.RepairDetail}
	if it.Bill != nil {
		amount := it.Bill.Amount
		r.BillState, r.BillAmount, r.BillLine = it.Bill.State, &amount, it.Bill.Line
	}
	if it.Ledger != nil {
		amount := it.Ledger.Amount
		r.LedgerState, r.LedgerAmount = it.Ledger.State, &amount
	}
	return r
}

func (r reconcileItemRow) item() ReconcileItem {
	it := ReconcileItem{Kind: r.Kind, OutTradeNo: r.OutTradeNo, TransactionID: r.TransactionID,
		OutRefundNo: r.OutRefundNo, Repair: r.Repair, RepairDetail: r.RepairDetail}
	if r.BillAmount != nil {
		it.Bill = &ItemSide{State: r.BillState, Amount: *r.BillAmount, Line: r.BillLine}
	}
	if r.LedgerAmount != nil {
		it.Ledger = &ItemSide{State: r.LedgerState, Amount: *r.LedgerAmount}
	}
	return it
}

// Reconciliation returns the stored report of a business day
// ("YYYY-MM-DD") with its items, or ErrNotFound.
func (s *Store) Reconciliation(ctx context.Context, day string) (*Reconciliation, error) {
	var row reconciliationRow
	// A PENDING row is a claim on a day never reconciled yet, not a report.
	err := s.db.WithContext(ctx).Where("bill_date = ? AND status <> ?", day, ReconcilePending).Take(&row).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return nil, fmt.Errorf("reconciliation %s: %w", day, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("read reconciliation %s: %w", day, err)
	}
	var items []reconcileItemRow
	if err := s.db.WithContext(ctx).Where("reconciliation_id = ?", row.ID).Order("id").Find(&items).Error; err != nil {
		return nil, fmt.Errorf("read reconciliation items %s: %w", day, err)
	}
	rep := &Reconciliation{Date: row.BillDate, Status: row.Status, BillPayments: row.BillPayments,
		BillRefunds: row.BillRefunds, LedgerPayments: row.LedgerPayments, LedgerRefunds: row.LedgerRefunds,
		BillPaid: row.BillPaid, BillRefunded: row.BillRefunded, LedgerPaid: row.LedgerPaid,
		LedgerRefunded: row.LedgerRefunded, Mismatches: row.Mismatches, Repaired: row.Repaired, Runs: row.Runs,
		RequestedBy: row.RequestedBy, CreatedAt: row.CreatedAt.UTC(), UpdatedAt: row.UpdatedAt.UTC(),
		Items: make([]ReconcileItem, len(items))}
	for i, r := range items {
		rep.Items[i] = r.item()
	}
	return rep, nil
}
