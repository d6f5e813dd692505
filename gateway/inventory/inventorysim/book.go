package inventorysim

import (
	"errors"
	"sort"
	"time"
)

// Record statuses.
const (
	StatusConfirmed = "CONFIRMED"
	StatusReleased  = "RELEASED"
)

// ConfirmationRecord is a confirmation the simulator holds.
type ConfirmationRecord struct {
	Key         string    `json:"key"`
	OutTradeNo  string    `json:"out_trade_no"`
	AmountTotal int64     `json:"amount_total"`
	Status      string    `json:"status"`
	CreatedAt   time.Time `json:"created_at"`
	// Applied is how often the key was applied; set only in /sim/ listings.
	Applied int `json:"applied,omitempty"`
}

// ReleaseRecord is a release the simulator holds.
type ReleaseRecord struct {
	Key         string    `json:"key"`
	OutRefundNo string    `json:"out_refund_no"`
	OutTradeNo  string    `json:"out_trade_no"`
	Amount      int64     `json:"amount"`
	Status      string    `json:"status"`
	CreatedAt   time.Time `json:"created_at"`
	// Applied is how often the key was applied; set only in /sim/ listings.
	Applied int `json:"applied,omitempty"`
}

// request is a write body; comparable so a replay can be checked field by field.
type request[Rec any] interface {
	comparable
	idemKey() string
	orderNo() string
	validate() error
	record(createdAt time.Time, applied int) Rec
}

type confirmRequest struct {
	Key         string `json:"key"`
	OutTradeNo  string `json:"out_trade_no"`
	AmountTotal int64  `json:"amount_total"`
}

func (r confirmRequest) idemKey() string { return r.Key }
func (r confirmRequest) orderNo() string { return r.OutTradeNo }

func (r confirmRequest) validate() error {
	if r.Key == "" || r.OutTradeNo == "" || r.AmountTotal <= 0 {
		return errors.New("need key, out_trade_no and a positive amount_total")
	}
	return nil
}

func (r confirmRequest) record(createdAt time.Time, applied int) ConfirmationRecord {
	return ConfirmationRecord{Key: r.Key, OutTradeNo: r.OutTradeNo, AmountTotal: r.AmountTotal,
		Status: StatusConfirmed, CreatedAt: createdAt, Applied: applied}
}

type releaseRequest struct {
	Key         string `json:"key"`
	OutRefundNo string `json:"out_refund_no"`
	OutTradeNo  string `json:"out_trade_no"`
	Amount      int64  `json:"amount"`
}

func (r releaseRequest) idemKey() string { return r.Key }
func (r releaseRequest) orderNo() string { return r.OutTradeNo }

func (r releaseRequest) validate() error {
	if r.Key == "" || r.OutRefundNo == "" || r.OutTradeNo == "" || r.Amount <= 0 {
		return errors.New("need key, out_refund_no, out_trade_no and a positive amount")
	}
	return nil
}

func (r releaseRequest) record(createdAt time.Time, applied int) ReleaseRecord {
	return ReleaseRecord{Key: r.Key, OutRefundNo: r.OutRefundNo, OutTradeNo: r.OutTradeNo,
		Amount: r.Amount, Status: StatusReleased, CreatedAt: createdAt, Applied: applied}
}

// outcome of applying one write.
type outcome int

const (
	applied outcome = iota
	duplicate
	mismatch
)

type entry[R any] struct {
	req       R
	createdAt time.Time
}

// book holds one kind of write by key (the dedup) and counts applications
// per order and per key. The counts follow what apply answered, not what
// the dedup stored: a dedup that lets a known key through (a lookup that
// misses, a replay taken for new) counts the key twice, where counting
// stores would count it once. It is not safe for concurrent use; Sim
// guards it with its lock.
type book[R request[Rec], Rec any] struct {
	byKey    map[string]*entry[R]
	perOrder map[string]int // applications per out_trade_no
	perKey   map[string]int // applications per key: above 1, the dedup failed
	// sends counts the writes of each key that reached apply (applied,
	// replayed or mismatched), misses the GETs of it answered 404. A
	// client that asks before it sends again sends a key at most once
	// more than it was told "not found", whatever order its requests
	// arrive in (a stale first send landing after the query is one).
	sends  map[string]int
	misses map[string]int
}

func newBook[R request[Rec], Rec any]() *book[R, Rec] {
	return &book[R, Rec]{byKey: map[string]*entry[R]{}, perOrder: map[string]int{}, perKey: map[string]int{},
		sends: map[string]int{}, misses: map[string]int{}}
}

// apply stores req unless its key is known, and returns the stored
// record; every write answered applied is counted.
func (b *book[R, Rec]) apply(req R, now time.Time) (Rec, outcome) {
	b.sends[req.idemKey()]++
	rec, o := b.dedup(req, now)
	if o == applied {
		b.perOrder[req.orderNo()]++
		b.perKey[req.idemKey()]++
	}
	return rec, o
}

// dedup answers a known key with its record (mismatch when the body
// differs) and stores a new one.
func (b *book[R, Rec]) dedup(req R, now time.Time) (Rec, outcome) {
	if e, ok := b.byKey[req.idemKey()]; ok {
		if e.req != req {
			return e.req.record(e.createdAt, 0), mismatch
		}
		return e.req.record(e.createdAt, 0), duplicate
	}
	b.byKey[req.idemKey()] = &entry[R]{req: req, createdAt: now}
	return req.record(now, 0), applied
}

func (b *book[R, Rec]) get(key string) (Rec, bool) {
	e, ok := b.byKey[key]
	if !ok {
		var zero Rec
		return zero, false
	}
	return e.req.record(e.createdAt, 0), true
}

// resentBlind adds to out, by key, the writes sent more often than once
// plus the queries answered "not found": each one beyond is a write sent
// again without asking first whether the earlier one took effect.
func (b *book[R, Rec]) resentBlind(out map[string]int) {
	for key, n := range b.sends {
		if extra := n - 1 - b.misses[key]; extra > 0 {
			out[key] += extra
		}
	}
}

// list returns every record with its applied count, oldest first.
func (b *book[R, Rec]) list() []Rec {
	entries := make([]*entry[R], 0, len(b.byKey))
	for _, e := range b.byKey {
		entries = append(entries, e)
	}
	sort.Slice(entries, func(i, j int) bool {
		if !entries[i].createdAt.Equal(entries[j].createdAt) {
			return entries[i].createdAt.Before(entries[j].createdAt)
		}
		return entries[i].req.idemKey() < entries[j].req.idemKey()
	})
	out := make([]Rec, len(entries))
	for i, e := range entries {
		out[i] = e.req.record(e.createdAt, b.perKey[e.req.idemKey()])
	}
	return out
}
