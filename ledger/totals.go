package ledger

import (
	"context"
	"fmt"
	"time"

	"gorm.io/gorm"
)

// BusinessDay is WeChat Pay's day: bills and daily totals run from
// midnight to midnight in UTC+8 (China Standard Time).
var BusinessDay = time.FixedZone("UTC+8", 8*3600)

// DayStart returns the UTC instant a "YYYY-MM-DD" business day starts.
func DayStart(day string) (time.Time, error) {
	t, err := time.ParseInLocation(time.DateOnly, day, BusinessDay)
	if err != nil {
		return time.Time{}, fmt.Errorf("day %q: want YYYY-MM-DD", day)
	}
	return t.UTC(), nil
}

// DayOf returns the business day ("YYYY-MM-DD") of an instant.
func DayOf(t time.Time) string { return t.In(BusinessDay).Format(time.DateOnly) }

// DayTotal is what moved on one business day, in fen: payments that
// succeeded that day, refunds that succeeded that day, and the difference.
type DayTotal struct {
	Day         string `json:"day"`
	PaidCount   int64  `json:"paid_count"`
	Paid        int64  `json:"paid"`
	RefundCount int64  `json:"refund_count"`
	Refunded    int64  `json:"refunded"`
	Net         int64  `json:"net"`
}

type sumRow struct {
	N   int64
	Sum int64
}

// DailyTotals returns one total per business day from first to last
// (inclusive, "YYYY-MM-DD"). Payments count by success_time with state
// SUCCESS; refunds by success_time with state SUCCESS.
func (s *Store) DailyTotals(ctx context.Context, first, last string) ([]DayTotal, error) {
	start, err := DayStart(first)
	if err != nil {
		return nil, err
	}
	end, err := DayStart(last)
	if err != nil {
		return nil, err
	}
	var out []DayTotal
	for day := start; !day.After(end); day = day.Add(24 * time.Hour) {
		t, err := s.dayTotal(ctx, day)
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, nil
}

func (s *Store) dayTotal(ctx context.Context, start time.Time) (DayTotal, error) {
	end := start.Add(24 * time.Hour)
	t := DayTotal{Day: DayOf(start)}
	var paid, refunded sumRow
	err := paidSum(s.db.WithContext(ctx), start, end).Scan(&paid).Error
	if err != nil {
		return t, fmt.Errorf("paid total of %s: %w", t.Day, err)
	}
	err = refundedSum(s.db.WithContext(ctx), start, end).Scan(&refunded).Error
	if err != nil {
		return t, fmt.Errorf("refunded total of %s: %w", t.Day, err)
	}
	t.PaidCount, t.Paid, t.RefundCount, t.Refunded = paid.N, paid.Sum, refunded.N, refunded.Sum
	t.Net = t.Paid - t.Refunded
	return t, nil
}

// paidSum counts and sums the payments that succeeded in [start, end)
// (index idx_payments_success_time).
func paidSum(db *gorm.DB, start, end time.Time) *gorm.DB {
	return db.Table("payments").Select("COUNT(*) AS n, COALESCE(SUM(amount_total), 0) AS sum").
		Where("state = ? AND success_time >= ? AND success_time < ?", PaymentSuccess, start, end)
}

// refundedSum counts and sums the refunds that succeeded in [start, end)
// (index idx_refunds_state_success: without it a year of totals read
// every SUCCESS refund 366 times, 30 s for 300,000 refunds on MariaDB).
func refundedSum(db *gorm.DB, start, end time.Time) *gorm.DB {
	return db.Table("refunds").Select("COUNT(*) AS n, COALESCE(SUM(amount), 0) AS sum").
		Where("state = ? AND success_time >= ? AND success_time < ?", "SUCCESS", start, end)
}
