package ledger

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// AuditEntry is one API request by an authenticated caller: who, what, when
// and how it ended.
type AuditEntry struct {
	ID         uint64     `json:"id"`
	Principal  string     `json:"principal"`
	Role       string     `json:"role"`
	Method     string     `json:"method"`
	Path       string     `json:"path"`             // with the query string
	Target     string     `json:"target,omitempty"` // what the path does not say, see NoteAuditTarget
	Status     int        `json:"status"`
	RequestID  string     `json:"request_id"`
	RemoteAddr string     `json:"remote_addr"`
	CreatedAt  time.Time  `json:"created_at"`
	FinishedAt *time.Time `json:"finished_at,omitempty"`
}

type auditRow struct {
	ID         uint64 `gorm:"primaryKey"`
	Principal  string
	Role       string
	Method     string
	Path       string
	Target     string
	Status     int
	RequestID  string
	RemoteAddr string
	CreatedAt  time.Time
	FinishedAt *time.Time
}

func (auditRow) TableName() string { return "audit_log" }

// MaxAuditPath bounds the stored path; longer ones are cut (the gateway
// refuses to serve them: see auditTrail).
const MaxAuditPath = 2048

// BeginAudit records a request before it runs and returns its entry id;
// FinishAudit adds the outcome. Writing first means no request is served
// without a record.
func (s *Store) BeginAudit(ctx context.Context, e AuditEntry) (uint64, error) {
	row := auditRow{Principal: truncate(e.Principal, 64), Role: truncate(e.Role, 16), Method: truncate(e.Method, 8),
		Path: truncate(strings.ToValidUTF8(e.Path, "\uFFFD"), MaxAuditPath), RequestID: truncate(e.RequestID, 64),
		RemoteAddr: truncate(e.RemoteAddr, 64), Target: truncate(strings.ToValidUTF8(e.Target, "\uFFFD"), maxAuditTarget),
		CreatedAt: s.now()}
	if err := s.db.WithContext(ctx).Create(&row).Error; err != nil {
		return 0, fmt.Errorf("write audit entry: %w", err)
	}
	return row.ID, nil
}

// FinishAudit stores the status a request ended with.
func (s *Store) FinishAudit(ctx context.Context, id uint64, status int) error {
	err := s.db.WithContext(ctx).Model(&auditRow{}).Where("id = ?", id).
		Updates(map[string]any{"status": status, "finished_at": s.now()}).Error
	if err != nil {
		return fmt.Errorf("finish audit entry %d: %w", id, err)
	}
	return nil
}

// maxAuditTarget is audit_log.target's width (migration 0049).
const maxAuditTarget = 64

// NoteAuditTarget stores in entry id what its request acts on when its
// path does not say (a reconciliation's date, sent in the body:
// "date=2025-01-15"), cut to the column.
func (s *Store) NoteAuditTarget(ctx context.Context, id uint64, target string) error {
	target = truncate(strings.ToValidUTF8(target, "\uFFFD"), maxAuditTarget)
	err := s.db.WithContext(ctx).Model(&auditRow{}).Where("id = ?", id).Update("target", target).Error
	if err != nil {
		return fmt.Errorf("note audit target %d: %w", id, err)
	}
	return nil
}

// AuditLog returns the newest entries, newest first (at most limit).
func (s *Store) AuditLog(ctx context.Context, limit int) ([]AuditEntry, error) {
	var rows []auditRow
	if err := s.db.WithContext(ctx).Order("id DESC").Limit(limit).Find(&rows).Error; err != nil {
		return nil, fmt.Errorf("read audit log: %w", err)
	}
	out := make([]AuditEntry, len(rows))
	for i, r := range rows {
		out[i] = r.entry()
	}
	return out, nil
}

func (r auditRow) entry() AuditEntry {
	return AuditEntry{ID: r.ID, Principal: r.Principal, Role: r.Role, Method: r.Method, Path: r.Path,
		Target: r.Target, Status: r.Status, RequestID: r.RequestID, RemoteAddr: r.RemoteAddr, CreatedAt: r.CreatedAt.UTC(),
		FinishedAt: utcPtr(r.FinishedAt)}
}

// EachAudit streams the audit entries matching q (principal, from/to on
// created_at), oldest first.
func (s *Store) EachAudit(ctx context.Context, q ListQuery, fn func(AuditEntry) error) error {
	return each(ctx, s.db, auditSpec, q, auditRow.entry, fn)
}

// truncate cuts s to at most n bytes without splitting a UTF-8 sequence.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n]
}
