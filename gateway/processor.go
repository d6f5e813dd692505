package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"paygateway/ledger"
)

// Notice is a verified WeChat Pay notification; Plaintext is filled once
// it is decrypted.
type Notice struct {
	ID           string
	EventType    string
	ResourceType string
	OriginalType string
	Summary      string
	CreateTime   time.Time
	Serial       string
	Nonce        string
	Timestamp    time.Time
	Resource     Sealed // the encrypted resource
	Plaintext    []byte // the decrypted resource (after Decrypt)
	// PreviousKey: Decrypt opened the resource with the previous APIv3
	// key, not the current one (see NotePreviousKey).
	PreviousKey bool
}

// Sealed is a notification's encrypted resource (AEAD_AES_256_GCM).
type Sealed struct {
	Algorithm, Ciphertext, AssociatedData, Nonce string
}

// Notices verifies and decrypts WeChat Pay notifications. Implementations
// return *Error values with codes ESIGNATURE, ESTALE, EDECRYPT or EINVALID.
// Verification comes first and decryption only when needed: a redelivery
// of a committed notification is answered without decrypting it.
type Notices interface {
	// Verify checks the headers, the time window and the signature and
	// reads the envelope (id, event type, sealed resource).
	Verify(ctx context.Context, header http.Header, body []byte) (*Notice, error)
	// Decrypt opens n.Resource into n.Plaintext.
	Decrypt(n *Notice) error
}

// ProcessorConfig holds the merchant identity notifications must carry and
// the guard timings.
type ProcessorConfig struct {
	MchID    string
	AppID    string
	NonceTTL time.Duration // how long nonces are remembered; above the ±5 min window
	LockTTL  time.Duration // advisory lock lifetime; above the slowest processing
	LockWait time.Duration // how long a duplicate waits for the lock holder
	DoneTTL  time.Duration // how long committed ids are remembered; above WeChat's 24 h of retries
	// Payment notifications are group-committed by BatchWorkers workers,
	// at most BatchMax per transaction, each transaction bounded by
	// BatchTimeout; BatchObserve (metrics) is told each commit's size.
	// While one transaction runs, another starts only when BatchSpill
	// notifications wait (see BatchPolicy.Spill).
	BatchWorkers int
	BatchMax     int
	BatchSpill   int
	BatchTimeout time.Duration
	BatchObserve func(size int, batched bool)
}

// Processor turns verified notifications into ledger changes.
type Processor struct {
	cfg     ProcessorConfig
	notices Notices
	gate    Gate
	locker  Locker
	store   *ledger.Store
	batch   *batcher
}

// NewProcessor wires a processor; zero timings get safe defaults. The
// gate and the locker must share their locks (see MemoryGate).
func NewProcessor(cfg ProcessorConfig, notices Notices, gate Gate, locker Locker, store *ledger.Store) *Processor {
	if cfg.NonceTTL <= 0 {
		cfg.NonceTTL = 15 * time.Minute
	}
	if cfg.LockTTL <= 0 {
		cfg.LockTTL = 10 * time.Second
	}
	if cfg.LockWait <= 0 {
		cfg.LockWait = 2 * time.Second
	}
	if cfg.DoneTTL <= 0 {
		cfg.DoneTTL = 25 * time.Hour
	}
	cfg.BatchWorkers = max(cfg.BatchWorkers, 1)
	cfg.BatchMax = max(cfg.BatchMax, 1)
	if cfg.BatchTimeout <= 0 {
		cfg.BatchTimeout = 10 * time.Second
	}
	b := newBatcher(store, BatchPolicy{Workers: cfg.BatchWorkers, Max: cfg.BatchMax, Spill: cfg.BatchSpill},
		cfg.BatchTimeout, cfg.BatchObserve)
	return &Processor{cfg: cfg, notices: notices, gate: gate, locker: locker, store: store, batch: b}
}

// Close stops the notification workers after their current commit; call
// it once the HTTP server has drained.
func (p *Processor) Close() error {
	p.batch.close()
	return nil
}

// Store returns the ledger the processor writes to.
func (p *Processor) Store() *ledger.Store { return p.store }

func (p *Processor) ttls() GateTTLs {
	return GateTTLs{Nonce: p.cfg.NonceTTL, Lock: p.cfg.LockTTL, Done: p.cfg.DoneTTL}
}

// guarded applies a verified notification at most once. The gate refuses
// a replayed nonce and answers a notification this process saw committed
// without decrypting it or touching the database (one Redis marks done is
// looked up in the ledger first); otherwise apply
// (decrypt, check, record) runs under the notification's lock, waiting
// for a holder first, and when it returns nil the notification is marked
// committed. apply returns a gateway error; nil means the ledger holds
// the notification. The lock only keeps a storm of redeliveries off the
// database: two different notifications of one order are serialised by
// the order's row lock and unique keys.
func (p *Processor) guarded(ctx context.Context, n *Notice, apply func() error) error {
	lockKey := "notify:" + n.ID
	// The signature covers the timestamp and the nonce: a replay repeats
	// both, while a redelivery WeChat Pay signs anew with the same nonce
	// (nothing says it never does) is not one.
	keys := GateKeys{Nonce: "nonce:" + strconv.FormatInt(n.Timestamp.Unix(), 10) + ":" + n.Nonce, NotifyID: n.ID, Lock: lockKey}
	adm, err := p.gate.Admit(ctx, keys, p.ttls())
	switch {
	case err != nil:
		return Errorf(CodeUnavailable, "replay check unavailable", err)
	case adm.Replay:
		return &Error{Code: CodeReplay, Message: "nonce already used"}
	case adm.Done && adm.Local:
		NoteDuplicate(ctx)
		return nil
	case adm.Done: // Redis's mark: a 2xx only for what this ledger holds
		if p.recorded(ctx, keys) {
			return nil
		}
		unlock := p.lock(ctx, lockKey)
		defer unlock()
	case adm.Token == "": // another delivery holds the lock: wait, then look
		unlock := p.lock(ctx, lockKey)
		defer unlock()
		if p.recorded(ctx, keys) {
			return nil
		}
	}
	committed := false
	// Deferred: a panic in apply (answered 500 by the router) must not
	// leave the lock held for its whole TTL, nor in memory for good.
	defer func() { p.finish(ctx, keys, adm.Token, committed) }()
	err = apply()
	committed = err == nil
	return err
}

// recorded reports whether the ledger holds the notification, marking it
// done when it does (later redeliveries to this instance skip the
// lookup). A failed lookup says no: the write that follows finds out.
func (p *Processor) recorded(ctx context.Context, keys GateKeys) bool {
	if done, err := p.store.NoticeRecorded(ctx, keys.NotifyID); err != nil || !done {
		return false
	}
	NoteDuplicate(ctx)
	p.finish(ctx, keys, "", true)
	return true
}

// finish releases the gate's lock (token) and, when committed, marks the
// notification done. A failure only costs a later redelivery a database
// lookup, or leaves the lock to expire.
func (p *Processor) finish(ctx context.Context, keys GateKeys, token string, committed bool) {
	if err := p.gate.Finish(context.WithoutCancel(ctx), keys, token, committed, p.ttls()); err != nil {
		slog.WarnContext(ctx, "gate finish failed; the lock expires on its own", "notify_id", keys.NotifyID, "err", err)
	}
}

// wxTransaction is the decrypted resource of a TRANSACTION.* notification.
type wxTransaction struct {
	AppID         string `json:"appid"`
	MchID         string `json:"mchid"`
	OutTradeNo    string `json:"out_trade_no"`
	TransactionID string `json:"transaction_id"`
	TradeState    string `json:"trade_state"`
	SuccessTime   string `json:"success_time"`
	Payer         struct {
		OpenID string `json:"openid"`
	} `json:"payer"`
	Amount struct {
		Total      int64  `json:"total"`
		PayerTotal int64  `json:"payer_total"`
		Currency   string `json:"currency"`
	} `json:"amount"`
}

// HandlePayment processes a payment notification. A nil error means the
// ledger has durably committed it (or had it already).
func (p *Processor) HandlePayment(ctx context.Context, header http.Header, body []byte) error {
	n, err := p.notices.Verify(ctx, header, body)
	if err != nil {
		return err
	}
	if n.EventType != "TRANSACTION.SUCCESS" {
		return &Error{Code: CodeInvalid, Message: "unsupported event_type " + n.EventType, Err: errSignedRefusal}
	}
	return p.guarded(ctx, n, func() error {
		if err := p.decrypt(ctx, n); err != nil {
			return err
		}
		u, err := p.transactionUpdate(n)
		if err != nil {
			return err
		}
		err = p.batch.apply(ctx, u)
		if errors.Is(err, ledger.ErrAlreadyRecorded) {
			NoteDuplicate(ctx)
		}
		return notifyError(err)
	})
}

// decrypt opens n's resource, telling the metrics when only the previous
// APIv3 key could.
func (p *Processor) decrypt(ctx context.Context, n *Notice) error {
	if err := p.notices.Decrypt(n); err != nil {
		return err
	}
	if n.PreviousKey {
		NotePreviousKey(ctx)
	}
	return nil
}

// notifyError is ledgerError for a notification: one the ledger refuses
// for its currency is also a signed refusal (see errSignedRefusal),
// refused again at every redelivery. (A registered order paid another
// amount in CNY is recorded and flagged, not refused: no error.)
func notifyError(err error) error {
	var mismatch *ledger.AmountMismatchError
	if errors.As(err, &mismatch) {
		err = errors.Join(err, errSignedRefusal)
	}
	return ledgerError(err)
}

func (p *Processor) transactionUpdate(n *Notice) (ledger.TransactionUpdate, error) {
	var tx wxTransaction
	if err := json.Unmarshal(n.Plaintext, &tx); err != nil {
		return ledger.TransactionUpdate{}, Errorf(CodeInvalid, "resource is not a transaction", err)
	}
	if err := p.checkMerchant(tx.MchID, tx.AppID); err != nil {
		return ledger.TransactionUpdate{}, err
	}
	if err := validTransaction(tx); err != nil {
		return ledger.TransactionUpdate{}, err
	}
	success, _ := time.Parse(time.RFC3339, tx.SuccessTime)
	return ledger.TransactionUpdate{
		Notice: ledger.Notice{NotifyID: n.ID, Source: ledger.SourceCallback, EventType: n.EventType,
			ResourceType: n.ResourceType, Summary: n.Summary, OutTradeNo: tx.OutTradeNo,
			TransactionID: tx.TransactionID, Plaintext: string(n.Plaintext), CreateTime: n.CreateTime},
		OutTradeNo: tx.OutTradeNo, TransactionID: tx.TransactionID, TradeState: tx.TradeState,
		AppID: tx.AppID, MchID: tx.MchID, PayerOpenID: tx.Payer.OpenID, AmountTotal: tx.Amount.Total,
		PayerTotal: tx.Amount.PayerTotal, Currency: tx.Amount.Currency, SuccessTime: success,
	}, nil
}

func (p *Processor) checkMerchant(mchID, appID string) error {
	if mchID != p.cfg.MchID {
		return &Error{Code: CodeMerchant, Message: "mchid does not match this merchant"}
	}
	if appID != "" && appID != p.cfg.AppID || appID == "" && p.cfg.AppID != "" {
		return &Error{Code: CodeMerchant, Message: "appid does not match this merchant"}
	}
	return nil
}

// validTransaction checks a TRANSACTION.SUCCESS resource. Its trade_state
// is SUCCESS, or REFUND when the order was refunded before the notice
// reached us (e.g. by hand in the merchant platform while the callback was
// being redelivered): the money came in, so the ledger records the payment,
// holds its stock confirmation and flags REFUNDED_OUTSIDE, as for an order
// query saying REFUND. Refusing it would only make WeChat Pay redeliver it
// for 24 h.
func validTransaction(tx wxTransaction) error {
	switch {
	case tx.OutTradeNo == "" || len(tx.OutTradeNo) > 64:
		return &Error{Code: CodeInvalid, Message: "out_trade_no missing or too long"}
	case tx.TransactionID == "" || len(tx.TransactionID) > 64:
		return &Error{Code: CodeInvalid, Message: "transaction_id missing or too long"}
	case len(tx.Payer.OpenID) > 128: // the ledger's column (MySQL's strict mode refuses longer)
		return &Error{Code: CodeInvalid, Message: "payer.openid longer than 128"}
	case tx.TradeState != "SUCCESS" && tx.TradeState != "REFUND":
		return &Error{Code: CodeInvalid, Message: "TRANSACTION.SUCCESS with trade_state " + tx.TradeState}
	case tx.Amount.Total <= 0:
		return &Error{Code: CodeInvalid, Message: "amount.total must be positive"}
	}
	return nil
}

// lock takes an advisory lock (see lockWith).
func (p *Processor) lock(ctx context.Context, key string) func() {
	return lockWith(ctx, p.locker, key, p.cfg.LockTTL, p.cfg.LockWait)
}

// ledgerError maps ledger errors onto gateway errors.
func ledgerError(err error) error {
	var mismatch *ledger.AmountMismatchError
	var unindexed *ledger.UnindexedFilterError
	switch {
	case err == nil, errors.Is(err, ledger.ErrAlreadyRecorded):
		return nil
	case errors.As(err, &unindexed):
		return Errorf(CodeInvalid, unindexedMessage(unindexed), err)
	case errors.As(err, &mismatch) && mismatch.Currency != "":
		return Errorf(CodeConflict, "the ledger keeps CNY, not "+strconv.Quote(mismatch.Currency), err)
	case errors.As(err, &mismatch):
		return Errorf(CodeConflict, fmt.Sprintf("amount %d fen differs from the registered %d fen", mismatch.Got, mismatch.Expected), err)
	case errors.Is(err, ledger.ErrIllegalTransition):
		return Errorf(CodeConflict, "state change refused", err)
	case errors.Is(err, ledger.ErrNoChange):
		return Errorf(CodeInvalid, "nothing to apply", err)
	case errors.Is(err, ledger.ErrNotFound):
		return Errorf(CodeNotFound, "not found", err)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return Errorf(CodeUnavailable, "timed out, try again", err)
	}
	return Errorf(CodeUnavailable, "ledger unavailable, try again", err)
}
