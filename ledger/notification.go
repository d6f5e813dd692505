package ledger

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"gorm.io/gorm"
)

// Notice is the stored form of what WeChat Pay told us: a callback's
// decrypted resource, or the answer of a query made by a job.
type Notice struct {
	NotifyID      string    `json:"notify_id"`
	Source        string    `json:"source"`
	EventType     string    `json:"event_type"`
	ResourceType  string    `json:"resource_type"`
	Summary       string    `json:"summary,omitempty"`
	OutTradeNo    string    `json:"out_trade_no"`
	TransactionID string    `json:"transaction_id,omitempty"`
	OutRefundNo   string    `json:"out_refund_no,omitempty"`
	Plaintext     string    `json:"plaintext"`
	CreateTime    time.Time `json:"create_time"`
	ReceivedAt    time.Time `json:"received_at"`
}

type notificationRow struct {
	ID            uint64 `gorm:"primaryKey"`
	NotifyID      string
	Source        string
	EventType     string
	ResourceType  string
	Summary       string
	OutTradeNo    string
	TransactionID *string
	OutRefundNo   *string
	Plaintext     string
	CreateTime    *time.Time
	ReceivedAt    time.Time
}

func (notificationRow) TableName() string { return "notifications" }

func (r notificationRow) notice() Notice {
	n := Notice{NotifyID: r.NotifyID, Source: r.Source, EventType: r.EventType, ResourceType: r.ResourceType,
		Summary: r.Summary, OutTradeNo: r.OutTradeNo, TransactionID: deref(r.TransactionID),
		OutRefundNo: deref(r.OutRefundNo), Plaintext: r.Plaintext, ReceivedAt: r.ReceivedAt.UTC()}
	if r.CreateTime != nil {
		n.CreateTime = r.CreateTime.UTC()
	}
	return n
}

// insertNotice stores a notice once; a second insert of the same notify id
// returns ErrAlreadyRecorded. On MySQL a concurrent twin waits on the
// unique key until the first commits, then sees the duplicate.
func (s *Store) insertNotice(tx *gorm.DB, n Notice) error {
	row := s.noticeRow(n)
	// A plain INSERT: on a duplicate, InnoDB takes only a shared lock
	// (ON DUPLICATE KEY UPDATE would take an exclusive one and deadlock
	// under many concurrent twins).
	err := tx.Create(&row).Error
	if errors.Is(err, gorm.ErrDuplicatedKey) {
		return ErrAlreadyRecorded
	}
	if err != nil {
		return fmt.Errorf("insert notification %s: %w", n.NotifyID, err)
	}
	return nil
}

func (s *Store) noticeRow(n Notice) notificationRow {
	// Summary and resource type only describe the notice: cut to their
	// columns (255 and 32 characters; bytes here, which always fit), since
	// a strict MySQL refuses a longer value and the notice would then never
	// be recorded (WeChat Pay allows a trade_state_desc of 256). The
	// plaintext keeps its bytes but those that are not UTF-8 (refused by a
	// strict MySQL's utf8mb4): each run of them becomes one U+FFFD (the
	// JSON decoder read them as U+FFFD too).
	row := notificationRow{NotifyID: n.NotifyID, Source: n.Source, EventType: n.EventType,
		ResourceType: truncate(n.ResourceType, 32), Summary: truncate(n.Summary, 255), OutTradeNo: n.OutTradeNo,
		TransactionID: nonEmpty(n.TransactionID), OutRefundNo: nonEmpty(n.OutRefundNo),
		Plaintext: strings.ToValidUTF8(n.Plaintext, "\uFFFD"), ReceivedAt: s.now()}
	if !n.CreateTime.IsZero() {
		ct := dbTime(n.CreateTime)
		row.CreateTime = &ct
	}
	return row
}

// NoticeRecorded reports whether a notification id is already stored; a
// cheap read that lets replays skip the write transaction.
func (s *Store) NoticeRecorded(ctx context.Context, notifyID string) (bool, error) {
	var row notificationRow
	err := s.db.WithContext(ctx).Select("id").Where("notify_id = ?", notifyID).Take(&row).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("look up notification %s: %w", notifyID, err)
	}
	return true, nil
}

// Notices lists the notifications stored for an order, oldest first.
func (s *Store) Notices(ctx context.Context, outTradeNo string) ([]Notice, error) {
	var rows []notificationRow
	err := s.db.WithContext(ctx).Where("out_trade_no = ?", outTradeNo).Order("id").Find(&rows).Error
	if err != nil {
		return nil, fmt.Errorf("read notifications of %s: %w", outTradeNo, err)
	}
	out := make([]Notice, len(rows))
	for i, r := range rows {
		out[i] = r.notice()
	}
	return out, nil
}
