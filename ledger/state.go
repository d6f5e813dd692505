package ledger

import "time"

// PaymentState is where a payment stands in its state machine.
type PaymentState string

// Payment states. A registered order starts EXPECTED; a callback for an
// order nobody registered creates it directly in SUCCESS.
const (
	PaymentNone     PaymentState = ""
	PaymentExpected PaymentState = "EXPECTED"
	PaymentSuccess  PaymentState = "SUCCESS"
	PaymentClosed   PaymentState = "CLOSED"
)

// Entities that have a state machine and history rows.
const (
	EntityPayment = "payment"
	EntityRefund  = "refund"
	EntityAnomaly = "anomaly" // keyed by the anomaly's id
)

// Sources say what caused a state change.
const (
	SourceAPI       = "api"
	SourceCallback  = "callback"
	SourceQuery     = "query"
	SourceReconcile = "reconcile"
	SourceJanitor   = "janitor"
)

// machine lists, for each state, the states it may move to. A machine
// never re-enters a state (TestMachinesNeverReenterAState), so an entity
// has at most one history row per state it entered: state_history's
// unique key (entity, entity_key, to_state) is the last guard against a
// transition applied twice.
type machine map[string][]string

func (m machine) check(entity, key, from, to string) error {
	for _, next := range m[from] {
		if next == to {
			return nil
		}
	}
	return &IllegalTransitionError{Entity: entity, Key: key, From: from, To: to}
}

// paymentMachine: CLOSED → SUCCESS is legal because money that arrives
// after a local close is a fact the ledger must record, not refuse.
var paymentMachine = machine{
	string(PaymentNone):     {string(PaymentExpected), string(PaymentSuccess)},
	string(PaymentExpected): {string(PaymentSuccess), string(PaymentClosed)},
	string(PaymentClosed):   {string(PaymentSuccess)},
}

// Transition is one append-only history row.
type Transition struct {
	ID         uint64    `json:"id"`
	Entity     string    `json:"entity"`
	EntityKey  string    `json:"entity_key"`
	OutTradeNo string    `json:"out_trade_no"`
	From       string    `json:"from"`
	To         string    `json:"to"`
	Source     string    `json:"source"`
	Ref        string    `json:"ref,omitempty"`
	CreatedAt  time.Time `json:"created_at"`
}

type historyRow struct {
	ID         uint64 `gorm:"primaryKey"`
	Entity     string
	EntityKey  string
	OutTradeNo string
	FromState  string
	ToState    string
	Source     string
	Ref        string
	CreatedAt  time.Time
}

func (historyRow) TableName() string { return "state_history" }

func (r historyRow) transition() Transition {
	return Transition{ID: r.ID, Entity: r.Entity, EntityKey: r.EntityKey, OutTradeNo: r.OutTradeNo,
		From: r.FromState, To: r.ToState, Source: r.Source, Ref: r.Ref, CreatedAt: r.CreatedAt.UTC()}
}
