package wxpaysim

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
)

// Control API requests and answers (JSON under /sim/).
type (
	// PayRequest is the body of POST /sim/pay.
	PayRequest struct {
		OutTradeNo       string `json:"out_trade_no"`
		Amount           int64  `json:"amount"`
		OpenID           string `json:"openid"`
		DropNotification bool   `json:"drop_notification"`
	}
	// PayResponse answers POST /sim/pay. NotifyStatus is the merchant's
	// answer to the first notification POST (0 if none was sent or it failed).
	PayResponse struct {
		Transaction  Transaction `json:"transaction"`
		NotifyStatus int         `json:"notify_status"`
	}
	// OrderRequest is the body of POST /sim/orders and /sim/orders/close.
	OrderRequest struct {
		OutTradeNo string `json:"out_trade_no"`
		Amount     int64  `json:"amount"`
	}
	// ResendRequest is the body of POST /sim/notify/resend.
	ResendRequest struct {
		OutTradeNo string `json:"out_trade_no"`
	}
	// ResolveRequest is the body of POST /sim/refunds/resolve: an ABNORMAL
	// refund ends with Status SUCCESS or CLOSED (see Sim.ResolveAbnormal).
	ResolveRequest struct {
		OutRefundNo string `json:"out_refund_no"`
		Status      string `json:"status"`
	}
)

func (s *Sim) controlRoutes(m *http.ServeMux) {
	m.HandleFunc("POST /sim/pay", s.ctlPay)
	m.HandleFunc("POST /sim/orders", s.ctlRegisterOrder)
	m.HandleFunc("POST /sim/orders/close", s.ctlCloseOrder)
	m.HandleFunc("GET /sim/orders", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, http.StatusOK, s.Orders()) })
	m.HandleFunc("GET /sim/refunds", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, http.StatusOK, s.Refunds()) })
	m.HandleFunc("POST /sim/refunds/settle", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]int{"settled": s.SettleRefunds()})
	})
	m.HandleFunc("POST /sim/refunds/resolve", s.ctlResolve)
	m.HandleFunc("GET /sim/faults", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, http.StatusOK, s.CurrentFaults()) })
	m.HandleFunc("POST /sim/faults", s.ctlFaults)
	m.HandleFunc("POST /sim/bill-faults", s.ctlBillFaults)
	m.HandleFunc("POST /sim/notify/resend", s.ctlResend)
	m.HandleFunc("POST /sim/sign-mode", s.ctlSignMode)
}

func (s *Sim) ctlPay(w http.ResponseWriter, r *http.Request) {
	var req PayRequest
	if !readJSON(w, r, &req) {
		return
	}
	tx, status, err := s.pay(r.Context(), req.OutTradeNo, req.Amount, req.OpenID, req.DropNotification)
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, PayResponse{Transaction: tx, NotifyStatus: status})
}

func (s *Sim) ctlRegisterOrder(w http.ResponseWriter, r *http.Request) {
	var req OrderRequest
	if !readJSON(w, r, &req) {
		return
	}
	if err := s.RegisterOrder(req.OutTradeNo, req.Amount); err != nil {
		writeErr(w, err)
		return
	}
	o, _ := s.Order(req.OutTradeNo)
	writeJSON(w, http.StatusOK, o)
}

func (s *Sim) ctlCloseOrder(w http.ResponseWriter, r *http.Request) {
	var req OrderRequest
	if !readJSON(w, r, &req) {
		return
	}
	if err := s.CloseOrder(req.OutTradeNo); err != nil {
		writeErr(w, err)
		return
	}
	o, _ := s.Order(req.OutTradeNo)
	writeJSON(w, http.StatusOK, o)
}

func (s *Sim) ctlResolve(w http.ResponseWriter, r *http.Request) {
	var req ResolveRequest
	if !readJSON(w, r, &req) {
		return
	}
	if err := s.ResolveAbnormal(req.OutRefundNo, req.Status); err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": req.Status})
}

func (s *Sim) ctlFaults(w http.ResponseWriter, r *http.Request) {
	var f Faults
	if readJSON(w, r, &f) {
		s.SetFaults(f)
		writeJSON(w, http.StatusOK, s.CurrentFaults())
	}
}

func (s *Sim) ctlBillFaults(w http.ResponseWriter, r *http.Request) {
	var f BillFaults
	if readJSON(w, r, &f) {
		s.SetBillFaults(f)
		writeJSON(w, http.StatusOK, f)
	}
}

func (s *Sim) ctlSignMode(w http.ResponseWriter, r *http.Request) {
	var m SignMode
	if readJSON(w, r, &m) {
		s.SetSignMode(m)
		writeJSON(w, http.StatusOK, m)
	}
}

func (s *Sim) ctlResend(w http.ResponseWriter, r *http.Request) {
	var req ResendRequest
	if !readJSON(w, r, &req) {
		return
	}
	status, err := s.ResendPayment(r.Context(), req.OutTradeNo)
	if errors.Is(err, ErrOrderState) {
		writeErr(w, err)
		return
	}
	out := map[string]any{"notify_status": status}
	if err != nil {
		out["error"] = err.Error() // delivery failed: report, WeChat would retry
	}
	writeJSON(w, http.StatusOK, out)
}

func readJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	if err := json.NewDecoder(io.LimitReader(r.Body, maxRequestBody)).Decode(v); err != nil {
		writeJSON(w, http.StatusBadRequest, apiError{Code: "PARAM_ERROR", Message: err.Error()})
		return false
	}
	return true
}

func writeErr(w http.ResponseWriter, err error) {
	status := http.StatusInternalServerError
	if errors.Is(err, ErrOrderState) || errors.Is(err, ErrRefundState) {
		status = http.StatusConflict
	}
	writeJSON(w, status, apiError{Code: "SIM_ERROR", Message: err.Error()})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
