package ledger

import (
	"context"
	"errors"
	"fmt"

	"gorm.io/gorm"
)

// saveReconciliation stores rep as the report of its day: a second run
// replaces the items and counts and raises runs.
func (s *Store) saveReconciliation(ctx context.Context, rep *Reconciliation) error {
	var err error
	for attempt := 0; attempt < 2; attempt++ {
		err = s.inTx(ctx, func(tx *gorm.DB) error { return s.replaceReport(tx, rep) })
		if !errors.Is(err, gorm.ErrDuplicatedKey) {
			break // a concurrent first run of the same day inserted the row; retry as an update
		}
	}
	if err != nil {
		return fmt.Errorf("store reconciliation %s: %w", rep.Date, err)
	}
	return nil
}

func (s *Store) replaceReport(tx *gorm.DB, rep *Reconciliation) error {
	now := s.now()
	var row reconciliationRow
	err := lockForUpdate(tx).Where("bill_date = ?", rep.Date).Take(&row).Error
	switch {
	case errors.Is(err, gorm.ErrRecordNotFound):
		row = reconciliationRow{BillDate: rep.Date, CreatedAt: now}
	case err != nil:
		return err
	default:
		if err := tx.Where("reconciliation_id = ?", row.ID).Delete(&reconcileItemRow{}).Error; err != nil {
			return err
		}
	}
	row.Status, row.BillPayments, row.BillRefunds = rep.Status, rep.BillPayments, rep.BillRefunds
	row.LedgerPayments, row.LedgerRefunds, row.BillPaid, row.BillRefunded = rep.LedgerPayments, rep.LedgerRefunds, rep.BillPaid, rep.BillRefunded
	row.LedgerPaid, row.LedgerRefunded, row.Mismatches, row.Repaired = rep.LedgerPaid, rep.LedgerRefunded, rep.Mismatches, rep.Repaired
	row.RequestedBy, row.UpdatedAt = truncate(rep.RequestedBy, 64), now
	row.Runs++
	if err := tx.Save(&row).Error; err != nil {
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

func itemRow(recID uint64, it ReconcileItem) reconcileItemRow {
	r := reconcileItemRow{ReconciliationID: recID, Kind: it.Kind, OutTradeNo: it.OutTradeNo,
		TransactionID: it.TransactionID, OutRefundNo: it.OutRefundNo, Repair: it.Repair,
		RepairDetail: truncate(it.RepairDetail, 512)}
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
	err := s.db.WithContext(ctx).Where("bill_date = ?", day).Take(&row).Error
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
