package inventorysim

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"
)

// maxBody caps a request body.
const maxBody = 1 << 20

// errorBody is every error answer, contract and control alike.
type errorBody struct {
	Code    string `json:"code"`
	Message string `json:"message,omitempty"`
}

// kind ties a request type to its book and its applied counter.
type kind[R request[Rec], Rec any] struct {
	book  func(*Sim) *book[R, Rec]
	count func(*Stats) *int
}

var (
	confirmKind = kind[confirmRequest, ConfirmationRecord]{
		book:  func(s *Sim) *book[confirmRequest, ConfirmationRecord] { return s.confirms },
		count: func(st *Stats) *int { return &st.Confirmations },
	}
	releaseKind = kind[releaseRequest, ReleaseRecord]{
		book:  func(s *Sim) *book[releaseRequest, ReleaseRecord] { return s.releases },
		count: func(st *Stats) *int { return &st.Releases },
	}
)

// Handler serves the inventory contract and the /sim/ control endpoints.
func (s *Sim) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /confirmations", writeHandler(s, confirmKind))
	mux.HandleFunc("GET /confirmations/{key}", readHandler(s, confirmKind))
	mux.HandleFunc("POST /releases", writeHandler(s, releaseKind))
	mux.HandleFunc("GET /releases/{key}", readHandler(s, releaseKind))
	mux.HandleFunc("GET /sim/faults", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, s.Faults())
	})
	mux.HandleFunc("POST /sim/faults", s.handleSetFaults)
	mux.HandleFunc("GET /sim/stats", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, s.Stats())
	})
	mux.HandleFunc("GET /sim/confirmations", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, s.Confirmations())
	})
	mux.HandleFunc("GET /sim/releases", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, s.Releases())
	})
	mux.HandleFunc("GET /sim/orders/{out_trade_no}", s.handleOrder)
	mux.HandleFunc("POST /sim/reset", func(w http.ResponseWriter, _ *http.Request) {
		s.Reset()
		w.WriteHeader(http.StatusNoContent)
	})
	return mux
}

// writeHandler serves POST: read the body, inject faults, then validate,
// apply and answer. Reading the body first lets the server notice a client
// that gives up during the injected latency, so such a request is not applied.
func writeHandler[R request[Rec], Rec any](s *Sim, k kind[R, Rec]) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		p := s.begin(true)
		body, readErr := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
		if !inject(w, r, p) {
			return
		}
		req, err := decodeWrite[R](r, body, readErr)
		if err != nil {
			s.countInvalid()
			writeJSON(w, http.StatusBadRequest, errorBody{Code: "INVALID_REQUEST", Message: err.Error()})
			return
		}
		status, answer := applyWrite(s, k, req)
		if p.action == actApplyThenTimeout && !stall(w, r, p) {
			return
		}
		writeJSON(w, status, answer)
	}
}

// readHandler serves GET {key}: faults (only if Faults.Only says so), then look up.
func readHandler[R request[Rec], Rec any](s *Sim, k kind[R, Rec]) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		p := s.begin(false)
		if !inject(w, r, p) {
			return
		}
		key := r.PathValue("key")
		rec, ok := lookup(s, k, key)
		if p.action == actApplyThenTimeout && !stall(w, r, p) {
			return
		}
		if !ok {
			countMiss(s, k, key) // only an answer the client got tells it to send again
			writeJSON(w, http.StatusNotFound, errorBody{Code: "NOT_FOUND", Message: "no record for this key"})
			return
		}
		writeJSON(w, http.StatusOK, rec)
	}
}

func applyWrite[R request[Rec], Rec any](s *Sim, k kind[R, Rec], req R) (int, any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rec, o := k.book(s).apply(req, s.now())
	s.stats.countOutcome(o, k.count(&s.stats))
	if rel, ok := any(req).(releaseRequest); ok && o == applied && s.confirms.perOrder[rel.orderNo()] == 0 {
		s.stats.Unconfirmed++ // the contract: stock is released only after it was confirmed
	}
	switch o {
	case applied:
		return http.StatusCreated, rec
	case duplicate:
		return http.StatusOK, rec
	}
	return http.StatusConflict, errorBody{Code: "IDEMPOTENCY_MISMATCH", Message: "key already used with a different body"}
}

// countMiss counts a query of key answered "not found" (see book.sends).
func countMiss[R request[Rec], Rec any](s *Sim, k kind[R, Rec], key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k.book(s).misses[key]++
}

func lookup[R request[Rec], Rec any](s *Sim, k kind[R, Rec], key string) (Rec, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return k.book(s).get(key)
}

// decodeWrite reads exactly one JSON object with no unknown fields, checks
// it, and requires the Idempotency-Key header to match its key.
func decodeWrite[R request[Rec], Rec any](r *http.Request, body []byte, readErr error) (R, error) {
	var req R
	if readErr != nil {
		return req, fmt.Errorf("read body: %w", readErr)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return req, fmt.Errorf("decode body: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return req, errors.New("trailing data after the JSON body")
	}
	if err := req.validate(); err != nil {
		return req, err
	}
	if h := r.Header.Get("Idempotency-Key"); h != req.idemKey() {
		return req, errors.New("Idempotency-Key header must equal the body's key")
	}
	return req, nil
}

// inject applies latency and the faults that strike before applying. It
// reports whether the handler should go on.
func inject(w http.ResponseWriter, r *http.Request, p plan) bool {
	if !sleep(r.Context(), p.latency) {
		drop(w)
		return false
	}
	switch p.action {
	case actError:
		writeJSON(w, http.StatusInternalServerError, errorBody{Code: "INJECTED_ERROR"})
	case actPermanent:
		writeJSON(w, http.StatusUnprocessableEntity, errorBody{Code: "INJECTED_PERMANENT"})
	case actDrop:
		drop(w)
	default:
		return true
	}
	return false
}

// stall runs the second half of ApplyThenTimeout: drop at once, or answer
// only after the delay. It reports whether the handler should still answer.
func stall(w http.ResponseWriter, r *http.Request, p plan) bool {
	if p.dropAfterApply || !sleep(r.Context(), p.delay) {
		drop(w)
		return false
	}
	return true
}

// sleep waits d unless ctx ends first, and reports whether it waited it out.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// drop closes the connection without an answer. Where hijacking is not
// possible (HTTP/2), http.ErrAbortHandler makes the server reset the stream.
func drop(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	_ = conn.Close() // the client sees EOF or a reset either way
}

func (s *Sim) handleSetFaults(w http.ResponseWriter, r *http.Request) {
	var f Faults
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err == nil {
		err = json.Unmarshal(body, &f)
	}
	if err == nil {
		err = f.Validate()
	}
	if err != nil {
		writeJSON(w, http.StatusBadRequest, errorBody{Code: "INVALID_FAULTS", Message: err.Error()})
		return
	}
	s.SetFaults(f)
	slog.Info("inventory sim faults set", "error_rate", f.ErrorRate, "drop_rate", f.DropRate,
		"apply_then_timeout_rate", f.ApplyThenTimeoutRate, "latency", f.Latency, "only", f.Only)
	writeJSON(w, http.StatusOK, f)
}

// orderCounts is the stock view of one order for invariant checkers.
type orderCounts struct {
	OutTradeNo string `json:"out_trade_no"`
	Confirmed  int    `json:"confirmed"`
	Released   int    `json:"released"`
}

func (s *Sim) handleOrder(w http.ResponseWriter, r *http.Request) {
	no := r.PathValue("out_trade_no")
	writeJSON(w, http.StatusOK, orderCounts{OutTradeNo: no, Confirmed: s.ConfirmCount(no), Released: s.ReleaseCount(no)})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	if err := json.NewEncoder(w).Encode(v); err != nil {
		slog.Debug("inventory sim: write answer", "err", err)
	}
}
