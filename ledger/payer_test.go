package ledger_test

import (
	"bytes"
	"context"
	"database/sql/driver"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"gorm.io/gorm"

	"paygateway/ledger"
	"paygateway/ledger/ledgertest"
)

// TestRefundsBelongToWhoPaid: an order registered for one openid and paid
// by another is recorded with the payer WeChat Pay names; only the payer
// may ask for a refund, the mismatch is flagged once for finance, and a
// retried registration is still compared with what was registered.
func TestRefundsBelongToWhoPaid(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		order := ledger.Order{OutTradeNo: "o61", AmountTotal: 500, PayerOpenID: "openid-A", ExpireAt: time.Now().Add(time.Hour)}
		if _, err := s.RegisterOrder(ctx, order); err != nil {
			t.Fatal(err)
		}
		u := paid("n61", "o61", "tx61", 500)
		u.PayerOpenID = "openid-B"
		if _, err := s.ApplyTransaction(ctx, u); err != nil {
			t.Fatal(err)
		}
		again := paid("n62", "o61", "tx61", 500) // a redelivery under another notify id
		again.PayerOpenID = "openid-B"
		if _, err := s.ApplyTransaction(ctx, again); !errors.Is(err, ledger.ErrAlreadyRecorded) {
			t.Fatalf("redelivery: err = %v, want ErrAlreadyRecorded", err)
		}
		if p, _ := s.Payment(ctx, "o61"); p.PayerOpenID != "openid-B" {
			t.Fatalf("payer = %q, want openid-B, whom WeChat Pay names", p.PayerOpenID)
		}
		if _, err := s.CheckRefund(ctx, "o61", "openid-A", 100, 0); !errors.Is(err, ledger.ErrNotOwner) {
			t.Fatalf("refund asked by the registered openid: err = %v, want ErrNotOwner", err)
		}
		if _, err := s.CheckRefund(ctx, "o61", "openid-B", 100, 0); err != nil {
			t.Fatalf("refund asked by the payer: %v", err)
		}
		flags, err := s.Anomalies(ctx, "o61")
		if err != nil || len(flags) != 1 || flags[0].Kind != ledger.AnomalyPayerMismatch || flags[0].SeenCount != 1 {
			t.Fatalf("anomalies = %+v (err %v), want one PAYER_MISMATCH seen once", flags, err)
		}
		assertRegistration(t, s, order, ledger.ErrAlreadyRecorded)
		order.PayerOpenID = "openid-B"
		assertRegistration(t, s, order, ledger.ErrConflict)
	})
}

// TestRegistrationsFromOlderBinaries: rows written before registered_openid
// was kept apart are compared with what they were registered with. Two
// shapes: an order registered without an openid and paid, whose
// registered_openid migration 0038 filled from the callback's payer; and
// an order registered by an older binary after 0038 ran (NULL
// registered_openid, the openid in payer_openid).
func TestRegistrationsFromOlderBinaries(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		expire := time.Now().Add(time.Hour)
		backfilled := ledger.Order{OutTradeNo: "o63", AmountTotal: 500, ExpireAt: expire}
		if _, err := s.RegisterOrder(ctx, backfilled); err != nil {
			t.Fatal(err)
		}
		if _, err := s.ApplyTransaction(ctx, paid("n63", "o63", "tx63", 500)); err != nil {
			t.Fatal(err)
		}
		setRegisteredOpenID(t, s, "o63", "registered_openid = payer_openid") // as 0038 did
		assertRegistration(t, s, backfilled, ledger.ErrAlreadyRecorded)
		backfilled.PayerOpenID = "openid-X"
		assertRegistration(t, s, backfilled, ledger.ErrConflict)

		old := ledger.Order{OutTradeNo: "o64", AmountTotal: 500, PayerOpenID: "openid-A", ExpireAt: expire}
		if _, err := s.RegisterOrder(ctx, old); err != nil {
			t.Fatal(err)
		}
		setRegisteredOpenID(t, s, "o64", "registered_openid = NULL")
		assertRegistration(t, s, old, ledger.ErrAlreadyRecorded)
		old.PayerOpenID = ""
		assertRegistration(t, s, old, ledger.ErrConflict)
	})
}

func setRegisteredOpenID(t *testing.T, s *ledger.Store, outTradeNo, set string) {
	t.Helper()
	if err := s.DB().Exec("UPDATE payments SET "+set+" WHERE out_trade_no = ?", outTradeNo).Error; err != nil {
		t.Fatal(err)
	}
}

func assertRegistration(t *testing.T, s *ledger.Store, o ledger.Order, want error) {
	t.Helper()
	if _, err := s.RegisterOrder(context.Background(), o); !errors.Is(err, want) {
		t.Fatalf("register %s with openid %q: err = %v, want %v", o.OutTradeNo, o.PayerOpenID, err, want)
	}
}

// TestPayerMismatchInABatchIsFlagged: group commit leaves a payment that
// must be flagged to the one-by-one path, which records it with its flag.
func TestPayerMismatchInABatchIsFlagged(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		order := ledger.Order{OutTradeNo: "o65", AmountTotal: 500, PayerOpenID: "openid-A", ExpireAt: time.Now().Add(time.Hour)}
		if _, err := s.RegisterOrder(ctx, order); err != nil {
			t.Fatal(err)
		}
		other := paid("n65", "o65", "tx65", 500)
		other.PayerOpenID = "openid-B"
		errs, batched := s.ApplyTransactions(ctx, []ledger.TransactionUpdate{paid("n66", "o66", "tx66", 100), other})
		if batched || errs[0] != nil || errs[1] != nil {
			t.Fatalf("batched %v, errs %v; want both applied one by one", batched, errs)
		}
		flags, err := s.Anomalies(ctx, "o65")
		if err != nil || len(flags) != 1 || flags[0].Kind != ledger.AnomalyPayerMismatch {
			t.Fatalf("anomalies = %+v (err %v), want PAYER_MISMATCH", flags, err)
		}
		if p, _ := s.Payment(ctx, "o65"); p.PayerOpenID != "openid-B" || p.State != ledger.PaymentSuccess {
			t.Fatalf("payment = %+v, want paid by openid-B", p)
		}
	})
}

// TestPayerMismatchEitherWayRound: a payment recorded before its order
// was registered, for another openid, is flagged when the registration
// comes; an order registered by an older binary (no registered_openid)
// and paid by another keeps what it was registered with.
func TestPayerMismatchEitherWayRound(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		expire := time.Now().Add(time.Hour)
		u := paid("n67", "o67", "tx67", 500)
		u.PayerOpenID = "openid-B"
		if _, err := s.ApplyTransaction(ctx, u); err != nil {
			t.Fatal(err)
		}
		late := ledger.Order{OutTradeNo: "o67", AmountTotal: 500, PayerOpenID: "openid-A", ExpireAt: expire}
		if _, err := s.RegisterOrder(ctx, late); err != nil {
			t.Fatalf("registration after the payment: %v", err)
		}
		assertRegistration(t, s, late, ledger.ErrAlreadyRecorded)
		if flags, err := s.Anomalies(ctx, "o67"); err != nil || len(flags) != 1 || flags[0].Kind != ledger.AnomalyPayerMismatch {
			t.Fatalf("anomalies = %+v (err %v), want PAYER_MISMATCH", flags, err)
		}

		old := ledger.Order{OutTradeNo: "o68", AmountTotal: 500, PayerOpenID: "openid-A", ExpireAt: expire}
		if _, err := s.RegisterOrder(ctx, old); err != nil {
			t.Fatal(err)
		}
		setRegisteredOpenID(t, s, "o68", "registered_openid = NULL")
		u = paid("n68", "o68", "tx68", 500)
		u.PayerOpenID = "openid-B"
		if _, err := s.ApplyTransaction(ctx, u); err != nil {
			t.Fatal(err)
		}
		assertRegistration(t, s, old, ledger.ErrAlreadyRecorded)
		if p, _ := s.Payment(ctx, "o68"); p.PayerOpenID != "openid-B" {
			t.Fatalf("payer = %q, want openid-B", p.PayerOpenID)
		}
	})
}

// TestAnomalyLoggedOnlyOnceCommitted: a flag is logged when its
// transaction commits; one that rolls back (here the stock job cannot be
// written) logs nothing and stores nothing, and the redelivery that
// commits logs it once.
func TestAnomalyLoggedOnlyOnceCommitted(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		var logs bytes.Buffer
		old := slog.Default()
		slog.SetDefault(slog.New(slog.NewJSONHandler(&logs, nil)))
		defer slog.SetDefault(old)
		ctx := context.Background()
		order := ledger.Order{OutTradeNo: "o69", AmountTotal: 500, PayerOpenID: "openid-A", ExpireAt: time.Now().Add(time.Hour)}
		if _, err := s.RegisterOrder(ctx, order); err != nil {
			t.Fatal(err)
		}
		failing := true
		if err := s.DB().Callback().Create().Before("gorm:create").Register("test:no_jobs", func(db *gorm.DB) {
			if failing && db.Statement.Table == "outbox_jobs" {
				_ = db.AddError(driver.ErrBadConn)
			}
		}); err != nil {
			t.Fatal(err)
		}
		u := paid("n69", "o69", "tx69", 500)
		u.PayerOpenID = "openid-B"
		if _, err := s.ApplyTransaction(ctx, u); err == nil {
			t.Fatal("applied with the job insert failing")
		}
		if n := strings.Count(logs.String(), "anomaly flagged"); n != 0 {
			t.Fatalf("a rolled-back flag was logged %d times:\n%s", n, logs.String())
		}
		failing = false
		if _, err := s.ApplyTransaction(ctx, u); err != nil {
			t.Fatal(err)
		}
		if n := strings.Count(logs.String(), `"msg":"anomaly flagged","kind":"PAYER_MISMATCH"`); n != 1 {
			t.Fatalf("committed flag logged %d times, want 1:\n%s", n, logs.String())
		}
	})
}

// TestRegisteredOpenIDIsNoPayer: a payment whose update names no payer
// (a bill row, a query answer without one) leaves the order with no payer,
// so nobody may ask for its refund; the openid it was registered with is a
// request's word, not WeChat Pay's, and does not stand in.
func TestRegisteredOpenIDIsNoPayer(t *testing.T) {
	ledgertest.Each(t, func(t *testing.T, s *ledger.Store) {
		ctx := context.Background()
		order := ledger.Order{OutTradeNo: "o69", AmountTotal: 500, PayerOpenID: "openid-A", ExpireAt: time.Now().Add(time.Hour)}
		if _, err := s.RegisterOrder(ctx, order); err != nil {
			t.Fatal(err)
		}
		u := paid("n69", "o69", "tx69", 500)
		u.PayerOpenID = ""
		if _, err := s.ApplyTransaction(ctx, u); err != nil {
			t.Fatal(err)
		}
		if p, err := s.Payment(ctx, "o69"); err != nil || p.State != ledger.PaymentSuccess || p.PayerOpenID != "" {
			t.Fatalf("payment = %+v, %v: want SUCCESS with no payer", p, err)
		}
		if _, err := s.CheckRefund(ctx, "o69", "openid-A", 100, 0); !errors.Is(err, ledger.ErrNotOwner) {
			t.Fatalf("refund asked by the registered openid: err = %v, want ErrNotOwner", err)
		}
		assertRegistration(t, s, order, ledger.ErrAlreadyRecorded)
	})
}
