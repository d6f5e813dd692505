package ledger

import (
	"context"
	"errors"
	"fmt"
	"time"

	"gorm.io/gorm"
)

// Anomaly kinds for refunds.
const (
	AnomalyRefundAmountMismatch = "REFUND_AMOUNT_MISMATCH"
	AnomalyUnknownRefund        = "UNKNOWN_REFUND"
	AnomalyStaleRefundStatus    = "STALE_REFUND_STATUS"
	// AnomalyLateRefundSuccess: WeChat Pay paid a refund the gateway had
	// concluded FAILED (and given back); it is recorded, finance checks.
	AnomalyLateRefundSuccess = "LATE_REFUND_SUCCESS"
)

// RefundUpdate is news about a refund: WeChat Pay's answer to a create or
// query call, a REFUND.* notification, or a local verdict (UNKNOWN after an
// ambiguous call, FAILED after a definite refusal).
type RefundUpdate struct {
	OutRefundNo   string
	State         RefundState
	RefundID      string
	TransactionID string
	Amount        int64 // WeChat's refund amount; 0 = not stated
	SuccessTime   time.Time
	// AcceptTime is WeChat's create_time of the refund; zero = not stated.
	// The first one stated is kept (see Refund.AcceptedAt).
	AcceptTime time.Time
	Source     string
	Ref        string // notify id, request id…
	LastError  string
	// Notice, when set, is stored in the same transaction (unique notify id).
	Notice *Notice
	// NextCheckAt, when set, is when the janitor looks again if the refund
	// is still pending after this update.
	NextCheckAt time.Time
	// Answer, when set, stores a request's final answer under its
	// idempotency key in the same transaction (see IdemAnswer).
	Answer *IdemAnswer
	// Attempt, when set, ties a local verdict about one attempt (FAILED
	// after a refusal; UNKNOWN after an ambiguous call, with what the call
	// met as LastError) to that attempt: it is refused (ErrNoChange) once
	// the refund has been sent again since, say by another instance's
	// janitor while this one stalled. Only the answer to the later
	// attempt settles it then.
	Attempt int
}

// ApplyRefund moves a refund through its state machine, stores the notice
// if any, and gives the amount back to the order when the refund ends
// CLOSED or FAILED, all in one transaction; SUCCESS runs refundSucceeded in
// it too. It returns the refund as committed (nil when nothing could be
// committed, except on an amount mismatch: the refund as read) and:
//   - ErrAlreadyRecorded when the notice is stored already or the refund
//     is already in that state (only next_check_at may change);
//   - ErrNoChange when the update is stale (e.g. ABNORMAL after SUCCESS):
//     the notice is stored, the state is left alone and an anomaly flagged;
//   - ErrNotFound for an unknown out_refund_no (the notice is stored and an
//     anomaly flagged; a SUCCESS also holds the order's stock confirmation
//     if it is still pending, see holdRefundedAfter);
//   - *AmountMismatchError when WeChat states another amount (nothing applied).
func (s *Store) ApplyRefund(ctx context.Context, u RefundUpdate) (*Refund, error) {
	var out *Refund
	var flag *Anomaly
	var verdict error
	var answered bool
	err := s.inTx(ctx, func(tx *gorm.DB) error {
		out, flag, verdict = nil, nil, nil
		if u.Notice != nil {
			if err := s.insertNotice(tx, *u.Notice); err != nil {
				return err
			}
		}
		var err error
		out, flag, verdict, err = s.applyRefund(tx, u)
		if err == nil && flag != nil {
			// In the transaction that stores the notice: a redelivery finds
			// the notice stored and would not flag it again.
			err = s.recordAnomaly(tx, *flag)
			flag = nil
		}
		if answered = err == nil && out != nil && u.Answer != nil; answered {
			err = s.storeAnswer(tx, u.Answer, out)
		}
		return err
	})
	if u.Answer != nil {
		u.Answer.Stored = answered && err == nil
	}
	if err != nil && u.Notice != nil {
		err = notAVerdict(err)
	}
	var mismatch *AmountMismatchError
	if err != nil && !errors.As(err, &mismatch) {
		// Rolled back, or its commit failed: out may be a state the ledger
		// does not hold. (On a mismatch, out is the refund as read.)
		out = nil
	}
	if mismatch != nil && !u.NextCheckAt.IsZero() {
		// The mismatch rolled the update back, its next check too: without
		// it the janitor would claim the refund again at the end of every
		// short claim, asking WeChat Pay the same question forever. Only a
		// refund still watched: one that ended meanwhile is not put back
		// on the janitor's list.
		if terr := s.db.WithContext(ctx).Model(&refundRow{}).
			Where("out_refund_no = ? AND (state IN ? OR next_check_at IS NOT NULL)", u.OutRefundNo, watchedStates).
			UpdateColumn("next_check_at", dbTime(u.NextCheckAt)).Error; terr != nil && err == nil {
			err = terr
		}
	}
	if flag != nil {
		// The transaction rolled back (another amount): the flag is written
		// on its own, and if it cannot be, that is the caller's error.
		if ferr := s.RecordAnomaly(ctx, *flag); ferr != nil {
			err = ferr
		}
	}
	if err == nil {
		err = verdict
	}
	if err != nil {
		return out, fmt.Errorf("apply refund %s → %s (%s): %w", u.OutRefundNo, u.State, u.Source, err)
	}
	if out != nil {
		s.noteRefund(out.State)
	}
	return out, nil
}

// watchedStates are the refund states the janitor always checks on (a
// FAILED refund only while it has a next_check_at).
var watchedStates = []string{string(RefundCreated), string(RefundProcessing), string(RefundUnknown), string(RefundAbnormal)}

// notAVerdict keeps an error that rolled a notice back from reading as
// ErrNotFound or ErrNoChange: with a notice, those are verdicts on a
// notice the ledger stored, which the notification handler answers 2xx,
// and WeChat Pay would not deliver it again. (A payment row missing under
// a late SUCCESS, say, rolls the notice back with ErrNotFound.)
func notAVerdict(err error) error {
	if errors.Is(err, ErrNotFound) || errors.Is(err, ErrNoChange) {
		return fmt.Errorf("notice not stored: %v", err)
	}
	return err
}

// applyRefund returns a verdict (ErrAlreadyRecorded, ErrNoChange,
// ErrNotFound) that must not roll back the stored notice, and an error that must.
func (s *Store) applyRefund(tx *gorm.DB, u RefundUpdate) (*Refund, *Anomaly, error, error) {
	row, err := findRefund(lockForUpdate(tx), u.OutRefundNo)
	if errors.Is(err, ErrNotFound) {
		// One flag per reported status, as for stale statuses: a SUCCESS
		// (money gone) after an ABNORMAL a person resolved is a new fact.
		flag := &Anomaly{Kind: AnomalyUnknownRefund, Ref: u.OutRefundNo + ":" + string(u.State), OutTradeNo: noticeTradeNo(u),
			Detail: fmt.Sprintf("WeChat Pay reports %s for refund %s the ledger never created", u.State, u.OutRefundNo)}
		if u.Notice == nil {
			return nil, nil, nil, ErrNotFound
		}
		if u.State == RefundSuccess { // money went back: not ABNORMAL, CLOSED or PROCESSING
			// The flag first: a payment being recorded meanwhile either
			// waits for it in refundFirst (a locking read) or is found by
			// holdRefundedAfter; both at once is a deadlock, retried.
			if err := s.recordAnomaly(tx, *flag); err != nil {
				return nil, nil, nil, err
			}
			if err := s.holdRefundedAfter(tx, noticeTradeNo(u), u.OutRefundNo, u.TransactionID); err != nil {
				return nil, nil, nil, err
			}
			return nil, nil, ErrNotFound, nil
		}
		return nil, flag, ErrNotFound, nil
	}
	if err != nil {
		return nil, nil, nil, err
	}
	if u.Attempt > 0 && row.Attempts != u.Attempt {
		return row.refund(), nil, fmt.Errorf("%w: verdict on attempt %d, refund %s was sent again since (attempt %d)",
			ErrNoChange, u.Attempt, row.OutRefundNo, row.Attempts), nil
	}
	if u.Amount > 0 && u.Amount != row.Amount {
		mismatch := &AmountMismatchError{OutTradeNo: row.OutTradeNo, Expected: row.Amount, Got: u.Amount}
		flag := &Anomaly{Kind: AnomalyRefundAmountMismatch, Ref: u.OutRefundNo, OutTradeNo: row.OutTradeNo, Detail: mismatch.Error()}
		return row.refund(), flag, nil, mismatch
	}
	if err := s.noteAccepted(tx, row, u); err != nil {
		return nil, nil, nil, err
	}
	if RefundState(row.State) == u.State {
		if err := s.touchRefund(tx, row, u); err != nil {
			return nil, nil, nil, err
		}
		return row.refund(), nil, ErrAlreadyRecorded, nil
	}
	late, fits, err := s.lateRefund(tx, row, u)
	if err != nil {
		return nil, nil, nil, err
	}
	if late && !fits {
		return s.noRoomAfterFailed(tx, row, u)
	}
	if err := refundMachine.check(EntityRefund, row.OutRefundNo, row.State, string(u.State)); err != nil {
		var flag *Anomaly
		// WeChat Pay never says FAILED: a FAILED from a query is the janitor
		// keeping its copy's state, not news that contradicts the ledger.
		if contradicts(RefundState(row.State), u.State) && !(u.State == RefundFailed && u.Source == SourceQuery) {
			flag = &Anomaly{Kind: AnomalyStaleRefundStatus, Ref: u.OutRefundNo + ":" + string(u.State), OutTradeNo: row.OutTradeNo,
				Detail: fmt.Sprintf("refund %s is %s; %s from %s ignored", row.OutRefundNo, row.State, u.State, u.Source)}
		}
		if state := RefundState(row.State); (state.Pending() || state == RefundAbnormal) && !u.NextCheckAt.IsZero() {
			// Still polled: the refused answer must not bring the next
			// query forward to the end of the janitor's short claim.
			if err := s.touchRefund(tx, row, RefundUpdate{NextCheckAt: u.NextCheckAt}); err != nil {
				return nil, nil, nil, err
			}
		}
		if err := s.settleLateWait(tx, row, u); err != nil {
			return nil, nil, nil, err
		}
		return row.refund(), flag, fmt.Errorf("%w: %w", ErrNoChange, err), nil
	}
	from := row.State
	out, err := s.moveRefund(tx, row, u)
	if err != nil {
		return nil, nil, nil, err
	}
	if late {
		return out, lateFlag(row, from, u), nil, nil
	}
	flag, err := s.paidAfterFailed(tx, row, from, u)
	return out, flag, nil, err
}

// paidAfterFailed flags LATE_REFUND_SUCCESS for a SUCCESS reached from
// PROCESSING or ABNORMAL by a refund that was FAILED before (its user told
// so; WeChat Pay then held it): its payment is as late as a FAILED →
// SUCCESS one, and the flag of the hold, STALE_REFUND_STATUS, may be
// resolved by now.
func (s *Store) paidAfterFailed(tx *gorm.DB, row *refundRow, from string, u RefundUpdate) (*Anomaly, error) {
	if u.State != RefundSuccess || (from != string(RefundProcessing) && from != string(RefundAbnormal)) {
		return nil, nil // FAILED leaves only to SUCCESS, PROCESSING or ABNORMAL
	}
	var failed int64
	err := tx.Model(&historyRow{}).Where("entity = ? AND entity_key = ? AND to_state = ?",
		EntityRefund, row.OutRefundNo, string(RefundFailed)).Count(&failed).Error
	if err != nil || failed == 0 {
		return nil, err
	}
	return &Anomaly{Kind: AnomalyLateRefundSuccess, Ref: u.OutRefundNo, OutTradeNo: row.OutTradeNo,
		Detail: fmt.Sprintf("refund %s of %d fen was FAILED (its user told so), then held by WeChat Pay; %s says WeChat Pay paid it: recorded SUCCESS",
			row.OutRefundNo, row.Amount, u.Source)}, nil
}

// lateFlag is the flag of a FAILED refund (its amount given back) that
// WeChat Pay turned out to have: paid (SUCCESS) or holding (PROCESSING,
// ABNORMAL), recorded with its amount counted again. The user was told it
// failed: a person must look.
func lateFlag(row *refundRow, from string, u RefundUpdate) *Anomaly {
	if u.State == RefundSuccess {
		return &Anomaly{Kind: AnomalyLateRefundSuccess, Ref: u.OutRefundNo, OutTradeNo: row.OutTradeNo,
			Detail: fmt.Sprintf("refund %s of %d fen was %s (given back); %s says WeChat Pay paid it: recorded SUCCESS, amount counted again", row.OutRefundNo, row.Amount, from, u.Source)}
	}
	return &Anomaly{Kind: AnomalyStaleRefundStatus, Ref: u.OutRefundNo + ":" + string(u.State), OutTradeNo: row.OutTradeNo,
		Detail: fmt.Sprintf("refund %s of %d fen was %s (given back); %s says WeChat Pay holds it (%s): recorded %s, amount counted again",
			row.OutRefundNo, row.Amount, from, u.Source, u.State, u.State)}
}

// noRoomAfterFailed handles WeChat Pay's word that a FAILED refund was
// paid (SUCCESS) or is held (PROCESSING, ABNORMAL) after all, when its
// amount no longer fits the order (another refund took it): not recorded
// yet, it stays FAILED on the janitor's list, asked again until the
// amount fits (the refund holding it gives it back, WeChat Pay having
// this one instead) or WeChat Pay closes it. It is flagged; a hold only
// once, when it goes on the list (a person looks either way).
func (s *Store) noRoomAfterFailed(tx *gorm.DB, row *refundRow, u RefundUpdate) (*Refund, *Anomaly, error, error) {
	watched := row.NextCheckAt != nil
	if err := s.touchRefund(tx, row, RefundUpdate{NextCheckAt: s.lateCheckAt(u)}); err != nil {
		return nil, nil, nil, err
	}
	verdict := fmt.Errorf("%w: %s of FAILED refund %s exceeds the order", ErrNoChange, u.State, row.OutRefundNo)
	if u.State != RefundSuccess && watched {
		return row.refund(), nil, verdict, nil
	}
	flag := &Anomaly{Kind: AnomalyStaleRefundStatus, Ref: u.OutRefundNo + ":" + string(u.State), OutTradeNo: row.OutTradeNo,
		Detail: fmt.Sprintf("refund %s is FAILED (amount given back, now taken by another refund); %s says WeChat Pay %s (%s): "+
			"not recorded yet, asked again until it fits or ends", row.OutRefundNo, u.Source, heldOrPaid(u.State), u.State)}
	return row.refund(), flag, verdict, nil
}

// heldOrPaid says what WeChat Pay's state means for the money.
func heldOrPaid(st RefundState) string {
	if st == RefundSuccess {
		return "paid it"
	}
	return "holds it"
}

// holdRefundedAfter runs in the transaction that stores WeChat Pay's
// REFUND.SUCCESS notice of refund outRefundNo, which the gateway never
// made, of order outTradeNo (none: nothing to do) and WeChat transaction
// transactionID (if stated): money of the order went back outside the
// gateway, e.g. by hand in the merchant platform. A refund of another
// transaction than the one the ledger holds paid (a duplicate payment's,
// refunded as DUPLICATE_PAYMENT asks) holds nothing: the order is paid.
// If the order is paid and its stock confirmation is still PENDING (not
// claimed by a worker: a RUNNING one is in flight, a DONE one confirmed
// already), the confirmation is held as when the refund came before the
// payment (see refundedOutside): DEAD with heldRefundedOutside and a
// history row, its waiting releases held with it (holdReleases), and
// REFUNDED_OUTSIDE flagged (one case with the other ways of learning it).
// A person decides whether the order ships; replaying the confirmation
// asks the inventory first if it was attempted already.
//
// Locks in the order of the payment path and of a worker's settle: the
// payment row, then the confirmation, then its releases. The notice's
// UNKNOWN_REFUND is written before the payment is read, and a payment
// being recorded reads it with a lock (refundFirst): whichever commits
// second sees the other (the payment's confirmation here, or this flag
// there), and if each waits on the other, MySQL's deadlock retry runs one
// again. The confirmation's update is conditional: a claim (SKIP LOCKED)
// that moved it to RUNNING first wins, and the job is left alone.
// A redelivered notice never gets here (its notify id is stored), and a
// confirmation held already is not PENDING: nothing changes twice.
func (s *Store) holdRefundedAfter(tx *gorm.DB, outTradeNo, outRefundNo, transactionID string) error {
	if outTradeNo == "" {
		return nil
	}
	pay, err := findPayment(lockForUpdate(tx), outTradeNo)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read payment %s of refund %s: %w", outTradeNo, outRefundNo, err)
	}
	if PaymentState(pay.State) != PaymentSuccess || (transactionID != "" && deref(pay.TransactionID) != "" &&
		deref(pay.TransactionID) != transactionID) {
		return nil
	}
	p := pay.payment()
	key := "confirm:" + outTradeNo
	now := s.now()
	// Only a confirmation no attempt may have sent is held here (never
	// attempted, or every attempt stored as unsent): one sent may have
	// taken effect (its answer lost); see flagUnheld.
	res := tx.Model(&outboxJobRow{}).Where("job_key = ? AND state = ? AND attempts = unsent_attempts", key, JobPending).
		Updates(map[string]any{"state": JobDead, "last_error": heldRefundedOutside, "updated_at": now})
	if res.Error != nil {
		return fmt.Errorf("hold confirmation %s: %w", key, res.Error)
	}
	if res.RowsAffected == 0 { // none, attempted, claimed, done or held already
		return s.flagUnheld(tx, p, key, outRefundNo)
	}
	var job outboxJobRow
	if err := tx.Where("job_key = ?", key).Take(&job).Error; err != nil {
		return fmt.Errorf("read held confirmation %s: %w", key, err)
	}
	if err := heldRow(tx, job.ID, job.Attempts, heldRefundedOutside, now); err != nil {
		return fmt.Errorf("hold confirmation job %d: %w", job.ID, err)
	}
	if err := s.holdReleases(tx, job.ID); err != nil {
		return err
	}
	return s.recordAnomaly(tx, refundedAfterFlag(p, outRefundNo))
}

// flagUnheld handles a confirmation the notice of a refund outside the
// gateway could not hold: one a worker holds (RUNNING) or an attempt may
// have sent already (PENDING, attempts > unsent_attempts), which may have
// taken effect. It flags
// REFUNDED_OUTSIDE: the next attempt asks the inventory first, and if the
// stock is not confirmed it is held then (RefundedOutside reads the
// flag). One dead for another reason, or held for another (an amount that
// differs: never sent), says it is held for this too from now on, so that
// a replay is a person's informed choice. One done, or held for this
// already, needs nothing.
func (s *Store) flagUnheld(tx *gorm.DB, p *Payment, key, outRefundNo string) error {
	job, found, err := lockConfirmation(tx, key)
	if err != nil || !found {
		return err
	}
	switch {
	case job.State == JobRunning || job.State == JobPending:
	case job.State == JobDead && !heldOutside(job.LastError):
		if err := markHeld(tx, job, job.LastError); err != nil {
			return err
		}
		if !job.maybeSent() { // held before it was ever sent: the usual case
			return s.recordAnomaly(tx, refundedAfterFlag(p, outRefundNo))
		}
	case job.State == JobDead: // held for a refund outside already, and another came
		if first, err := firstReport(tx, outRefundNo); err != nil || !first {
			return err // a refund already reported (by another notice or a query) changes nothing
		}
		if err := heldAgain(tx, job, outRefundNo, s.now()); err != nil {
			return err
		}
		return s.recordAnomaly(tx, refundedAfterFlag(p, outRefundNo))
	default:
		return nil
	}
	a := refundedAfterFlag(p, outRefundNo)
	a.Detail = fmt.Sprintf("WeChat Pay reported refund %s of order %s SUCCESS (anomaly UNKNOWN_REFUND), a refund the gateway "+
		"never made, after its stock confirmation (job %s) was attempted: it may have taken effect. If it did not, its next "+
		"attempt holds it in the dead letters (a dead one says held now): replay it if the order ships",
		outRefundNo, p.OutTradeNo, key)
	return s.recordAnomaly(tx, a)
}

// lockConfirmation reads the stock confirmation job key (found false if
// there is none), locked: a worker's settle that moves it to DEAD
// meanwhile waits, and then finds the flag this transaction writes
// (markHeldOutside) instead of missing it.
func lockConfirmation(tx *gorm.DB, key string) (job outboxJobRow, found bool, err error) {
	err = lockForUpdate(tx).Where("job_key = ?", key).Take(&job).Error
	switch {
	case errors.Is(err, gorm.ErrRecordNotFound):
		return job, false, nil
	case err != nil:
		return job, false, fmt.Errorf("read confirmation %s: %w", key, err)
	}
	return job, true, nil
}

// heldAgain notes on a confirmation held for a refund outside the gateway
// that WeChat Pay reported another: a history row, and the job's version
// moves, so that a replay a person decided on before it is refused
// (ReplayIf), and its anomaly is seen again.
func heldAgain(tx *gorm.DB, job outboxJobRow, outRefundNo string, now time.Time) error {
	err := tx.Model(&outboxJobRow{}).Where("id = ?", job.ID).Update("updated_at", now).Error
	if err == nil {
		err = heldRow(tx, job.ID, job.Attempts, "held: WeChat Pay reports another refund outside the gateway ("+
			outRefundNo+")", now)
	}
	if err != nil {
		return fmt.Errorf("hold confirmation %s again: %w", job.JobKey, err)
	}
	return nil
}

// firstReport reports whether this transaction's UNKNOWN_REFUND flag of
// outRefundNo's SUCCESS (recorded just before, see applyRefund) is its
// first sighting.
func firstReport(tx *gorm.DB, outRefundNo string) (bool, error) {
	var seen int
	err := tx.Model(&anomalyRow{}).Select("seen_count").
		Where("kind = ? AND ref = ?", AnomalyUnknownRefund, outRefundNo+":"+string(RefundSuccess)).Scan(&seen).Error
	if err != nil {
		return false, fmt.Errorf("read flag of refund %s: %w", outRefundNo, err)
	}
	return seen == 1, nil
}

// refundedAfterFlag: WeChat Pay's REFUND.SUCCESS notice of a refund the
// gateway never made came after the order's payment, before its stock
// confirmation went out. The same case as refundedOutsideFlag, under the
// same kind and ref: one case for a person, however it was learnt.
func refundedAfterFlag(p *Payment, outRefundNo string) Anomaly {
	a := refundedOutsideFlag(p)
	a.Detail = fmt.Sprintf("WeChat Pay reported refund %s of order %s SUCCESS (anomaly UNKNOWN_REFUND), a refund the gateway "+
		"never made, after the order's payment (transaction %s, %d fen) and before its stock was confirmed: refunded "+
		"outside the gateway; its stock confirmation (job confirm:%s) is held in the dead letters: replay it if the order ships",
		outRefundNo, p.OutTradeNo, p.TransactionID, p.AmountTotal, p.OutTradeNo)
	return a
}

// lateSuccessRecheck is how often a FAILED refund WeChat Pay says it paid,
// whose amount does not fit the order yet, is asked about again when the
// update names no time.
const lateSuccessRecheck = 10 * time.Minute

func (s *Store) lateCheckAt(u RefundUpdate) time.Time {
	if !u.NextCheckAt.IsZero() {
		return u.NextCheckAt
	}
	return s.now().Add(lateSuccessRecheck)
}

// settleLateWait handles CLOSED for a FAILED refund kept on the janitor's
// list for a late SUCCESS, PROCESSING or ABNORMAL that did not fit: it
// ends the wait (the money went back).
func (s *Store) settleLateWait(tx *gorm.DB, row *refundRow, u RefundUpdate) error {
	if RefundState(row.State) != RefundFailed || row.NextCheckAt == nil {
		return nil
	}
	if u.State != RefundClosed {
		return nil
	}
	err := tx.Model(&refundRow{}).Where("id = ?", row.ID).
		Updates(map[string]any{"next_check_at": nil, "updated_at": s.now()}).Error
	if err != nil {
		return fmt.Errorf("end the wait of refund %s: %w", row.OutRefundNo, err)
	}
	return nil
}

// moveRefunded counts row's amount against its order (sign +1) or gives
// it back (-1), refusing to go past what was paid or below zero.
func (s *Store) moveRefunded(tx *gorm.DB, row *refundRow, sign int) error {
	cond, op, what := "refunded_total >= ?", "refunded_total - ?", "give back"
	if sign > 0 {
		cond, op, what = "refunded_total + ? <= amount_total", "refunded_total + ?", "count again"
	}
	res := tx.Model(&paymentRow{}).Where("out_trade_no = ? AND "+cond, row.OutTradeNo, row.Amount).
		Updates(map[string]any{"refunded_total": gorm.Expr(op, row.Amount),
			"version": gorm.Expr("version + 1"), "updated_at": s.now()})
	if res.Error != nil {
		return fmt.Errorf("%s refund %s: %w", what, row.OutRefundNo, res.Error)
	}
	if res.RowsAffected != 1 {
		return fmt.Errorf("%s refund %s: payment %s has no room for %d fen", what, row.OutRefundNo, row.OutTradeNo, row.Amount)
	}
	return nil
}

// lateRefund reports whether u is WeChat Pay's word that a refund the
// ledger holds FAILED was paid (SUCCESS) or is held (PROCESSING,
// ABNORMAL), so that its amount counts again, and if so whether the
// amount still fits what is left of the order (the payment row is locked
// until the transaction ends).
func (s *Store) lateRefund(tx *gorm.DB, row *refundRow, u RefundUpdate) (late, fits bool, err error) {
	if RefundState(row.State) != RefundFailed || (u.State != RefundSuccess && u.State != RefundProcessing && u.State != RefundAbnormal) {
		return false, false, nil
	}
	pay, err := findPayment(lockForUpdate(tx), row.OutTradeNo)
	if err != nil {
		return true, false, err
	}
	return true, pay.AmountTotal != nil && pay.RefundedTotal+row.Amount <= *pay.AmountTotal, nil
}

// contradicts reports a late update that disagrees with a final outcome
// about where the money went (paid out vs given back): people must look.
// A late PROCESSING or ABNORMAL after an outcome is just out of order.
func contradicts(have, got RefundState) bool {
	paid := func(s RefundState) bool { return s == RefundSuccess }
	back := func(s RefundState) bool { return s.returnsMoney() }
	return (paid(have) && back(got)) || (back(have) && paid(got))
}

func noticeTradeNo(u RefundUpdate) string {
	if u.Notice != nil {
		return u.Notice.OutTradeNo
	}
	return ""
}

// noteAccepted keeps the first acceptance time WeChat Pay states for the
// refund, whatever the update does to its state: it is a fact about
// WeChat's side, which reconciliation needs to find the refund's bill day.
func (s *Store) noteAccepted(tx *gorm.DB, row *refundRow, u RefundUpdate) error {
	if u.AcceptTime.IsZero() || row.AcceptedAt != nil {
		return nil
	}
	at := dbTime(u.AcceptTime)
	if err := markAccepted(tx, row.OutRefundNo, at); err != nil {
		return err
	}
	row.AcceptedAt = &at
	return nil
}

// touchRefund records what a same-state update adds: WeChat's ids and when
// to look again.
func (s *Store) touchRefund(tx *gorm.DB, row *refundRow, u RefundUpdate) error {
	updates := map[string]any{}
	if u.RefundID != "" && row.RefundID == nil {
		updates["refund_id"] = u.RefundID
	}
	if u.LastError != "" { // the outcome of a re-send that left the state as it was
		updates["last_error"] = fitLastError(u.LastError)
	}
	if !u.NextCheckAt.IsZero() {
		updates["next_check_at"] = dbTime(u.NextCheckAt)
	}
	if len(updates) == 0 {
		return nil
	}
	updates["updated_at"] = s.now()
	if err := tx.Model(&refundRow{}).Where("id = ?", row.ID).Updates(updates).Error; err != nil {
		return fmt.Errorf("touch refund %s: %w", row.OutRefundNo, err)
	}
	return nil
}

// fitLastError cuts an error text to refunds.last_error as valid UTF-8:
// it may quote bytes from an answer's headers, and MySQL's strict utf8mb4
// refuses invalid ones, failing the update that records the refund's
// state (SQLite stores them).
func fitLastError(s string) string { return fit(s, 512) }

func (s *Store) moveRefund(tx *gorm.DB, row *refundRow, u RefundUpdate) (*Refund, error) {
	from := row.State
	row.State = string(u.State)
	row.UpdatedAt = s.now()
	if u.RefundID != "" {
		row.RefundID = &u.RefundID
	}
	if u.TransactionID != "" && row.TransactionID == nil {
		row.TransactionID = &u.TransactionID
	}
	if u.LastError != "" {
		row.LastError = fitLastError(u.LastError)
	}
	if u.State == RefundSuccess {
		st := dbTime(u.SuccessTime)
		if u.SuccessTime.IsZero() {
			st = row.UpdatedAt
		}
		row.SuccessTime = &st
	}
	row.NextCheckAt = nil
	if u.State.Pending() || u.State == RefundAbnormal {
		next := dbTime(u.NextCheckAt)
		if u.NextCheckAt.IsZero() {
			next = row.UpdatedAt
		}
		row.NextCheckAt = &next
	}
	res := tx.Model(&refundRow{}).Where("id = ? AND version = ?", row.ID, row.Version).Updates(map[string]any{
		"state": row.State, "refund_id": row.RefundID, "transaction_id": row.TransactionID,
		"last_error": row.LastError, "success_time": row.SuccessTime, "next_check_at": row.NextCheckAt,
		"version": row.Version + 1, "updated_at": row.UpdatedAt})
	if res.Error != nil {
		return nil, fmt.Errorf("update refund %s: %w", row.OutRefundNo, res.Error)
	}
	if res.RowsAffected != 1 {
		return nil, fmt.Errorf("update refund %s: changed concurrently (version %d)", row.OutRefundNo, row.Version)
	}
	row.Version++
	if err := s.afterRefundMove(tx, row, from, u); err != nil {
		return nil, err
	}
	return row.refund(), nil
}

func (s *Store) afterRefundMove(tx *gorm.DB, row *refundRow, from string, u RefundUpdate) error {
	state := RefundState(row.State)
	switch {
	case !state.returnsMoney() && RefundState(from).returnsMoney(): // late SUCCESS: counted again (it fits, see lateSuccess)
		if err := s.moveRefunded(tx, row, +1); err != nil {
			return err
		}
	case state.returnsMoney() && !RefundState(from).returnsMoney():
		if err := s.moveRefunded(tx, row, -1); err != nil {
			return err
		}
	}
	t := Transition{Entity: EntityRefund, EntityKey: row.OutRefundNo, OutTradeNo: row.OutTradeNo,
		From: from, To: row.State, Source: u.Source, Ref: u.Ref}
	if err := s.appendHistory(tx, t); err != nil {
		return err
	}
	if state == RefundSuccess {
		return s.refundSucceeded(tx, row.OutRefundNo, row.OutTradeNo, row.Amount)
	}
	return nil
}

// CountRefundAttempt adds one to a pending refund's attempts before it is
// sent (again) to WeChat Pay, so a crash after sending is never mistaken
// for "never sent". It acts only on the refund as the caller read it: it
// returns ErrNoChange if the refund is no longer CREATED or UNKNOWN, or no
// longer at version (changed since, say, re-claimed by another instance's
// janitor after this one's lease ran out), so two callers never both send.
// When the order's last refund application went out less than gap ago,
// nothing is counted: the refund's next check moves to the end of the gap
// (booked: a refund asked for later waits for it) and it returns the
// refund with ErrRefundWaits.
func (s *Store) CountRefundAttempt(ctx context.Context, outRefundNo string, version int64, nextCheckAt time.Time, gap time.Duration) (*Refund, error) {
	var out *Refund
	var waits bool
	err := s.inTx(ctx, func(tx *gorm.DB) error {
		var err error
		out, waits, err = s.countRefundAttempt(tx, outRefundNo, version, nextCheckAt, gap)
		return err
	})
	switch {
	case err != nil:
		return nil, fmt.Errorf("count attempt of refund %s: %w", outRefundNo, err)
	case waits:
		return out, fmt.Errorf("count attempt of refund %s: %w until %s", outRefundNo, ErrRefundWaits,
			out.NextCheckAt.Format(time.RFC3339Nano))
	}
	return out, nil
}

// countRefundAttempt locks the refund, then its order (the order in
// which ApplyRefund locks them).
func (s *Store) countRefundAttempt(tx *gorm.DB, outRefundNo string, version int64, nextCheckAt time.Time, gap time.Duration) (*Refund, bool, error) {
	row, err := findRefund(lockForUpdate(tx), outRefundNo)
	if err != nil {
		return nil, false, err
	}
	if row.Version != version || (RefundState(row.State) != RefundCreated && RefundState(row.State) != RefundUnknown) {
		return nil, false, fmt.Errorf("%w: refund is %s at version %d, read at %d", ErrNoChange, row.State, row.Version, version)
	}
	pay, err := findPayment(lockForUpdate(tx), row.OutTradeNo)
	if err != nil {
		return nil, false, fmt.Errorf("read order %s: %w", row.OutTradeNo, err)
	}
	now := s.now()
	updates := map[string]any{"attempts": gorm.Expr("attempts + 1"), "next_check_at": dbTime(nextCheckAt),
		"version": gorm.Expr("version + 1"), "updated_at": now}
	free := pay.sentGapEnds(gap)
	waits := free.After(now)
	if waits {
		updates = map[string]any{"next_check_at": free, "version": gorm.Expr("version + 1"), "updated_at": now}
		err = bookRefundSlot(tx, pay, free)
	} else {
		err = markRefundSent(tx, pay.ID, now)
	}
	if err != nil {
		return nil, false, err
	}
	if err := tx.Model(&refundRow{}).Where("id = ?", row.ID).Updates(updates).Error; err != nil {
		return nil, false, err
	}
	out, err := findRefund(tx, outRefundNo)
	if err != nil {
		return nil, false, err
	}
	return out.refund(), waits, nil
}

// claimSpare is how many rows beyond its limit a claim reads.
const claimSpare = 4

// ClaimStuckRefunds claims up to limit refunds left CREATED, PROCESSING,
// UNKNOWN or ABNORMAL, or FAILED and watched (waiting for room for a late
// SUCCESS, or held ABNORMAL by WeChat: only those FAILED refunds have a
// next_check_at), whose next_check_at is at or before dueBy (at most
// now), by pushing next_check_at lease into the future with a conditional
// UPDATE: of several gateway instances only one wins each row. It reads a
// few more than limit, so that a row another instance claimed first does
// not leave it empty-handed. A janitor sweep passes the time it began, so
// a refund it checked and set to be checked again soon is not claimed
// twice in one sweep.
func (s *Store) ClaimStuckRefunds(ctx context.Context, dueBy time.Time, limit int, lease time.Duration) ([]Refund, error) {
	now := s.now()
	if dueBy.After(now) {
		dueBy = now
	}
	var rows []refundRow
	err := s.db.WithContext(ctx).
		Where("state IN ? AND next_check_at <= ?", []string{string(RefundCreated), string(RefundProcessing),
			string(RefundUnknown), string(RefundAbnormal), string(RefundFailed)}, dueBy).
		Order("next_check_at").Limit(limit + claimSpare).Find(&rows).Error
	if err != nil {
		return nil, fmt.Errorf("find stuck refunds: %w", err)
	}
	var out []Refund
	for i := 0; i < len(rows) && len(out) < limit; i++ {
		r := &rows[i]
		until := dbTime(now.Add(lease)) // a lease may have a finer part
		// Still due: an answer recorded since the read may have set the
		// next check later without a new version (touchRefund).
		res := s.db.WithContext(ctx).Model(&refundRow{}).
			Where("id = ? AND version = ? AND next_check_at <= ?", r.ID, r.Version, dueBy).
			Updates(map[string]any{"next_check_at": until, "version": r.Version + 1, "updated_at": now})
		if res.Error != nil {
			return out, fmt.Errorf("claim refund %s: %w", r.OutRefundNo, res.Error)
		}
		if res.RowsAffected == 1 {
			r.Version++
			r.NextCheckAt = &until
			out = append(out, *r.refund())
		}
	}
	return out, nil
}
