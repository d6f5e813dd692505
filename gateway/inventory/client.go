// Package inventory is the HTTP client for the inventory service, which
// confirms stock after a payment and releases it after a refund.
//
// Every write carries an Idempotency-Key, so sending it again is harmless.
// Errors are classified for the caller: IsUnknown (query, then retry) or
// IsPermanent (dead-letter). Other errors, such as a malformed BaseURL, are
// neither and point at configuration.
package inventory

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"
)

// DefaultTimeout bounds each call when Config.Timeout is zero.
const DefaultTimeout = 5 * time.Second

// maxResponseBody caps how much of an answer the client reads.
const maxResponseBody = 64 << 10

const (
	statusConfirmed = "CONFIRMED"
	statusReleased  = "RELEASED"
)

// Config configures a Client.
type Config struct {
	BaseURL string        // e.g. http://127.0.0.1:8082
	Timeout time.Duration // per call, including reading the answer; DefaultTimeout if zero
	Client  *http.Client  // optional; the default one does not follow redirects
}

// Client calls the inventory service. It is safe for concurrent use.
type Client struct {
	base    string
	timeout time.Duration
	http    *http.Client
}

// Confirmation asks the service to confirm the stock of a paid order.
type Confirmation struct {
	Key         string `json:"key"`
	OutTradeNo  string `json:"out_trade_no"`
	AmountTotal int64  `json:"amount_total"` // fen
}

// Release asks the service to release the stock of a refunded order.
type Release struct {
	Key         string `json:"key"`
	OutRefundNo string `json:"out_refund_no"`
	OutTradeNo  string `json:"out_trade_no"`
	Amount      int64  `json:"amount"` // fen
}

// record is the part of the service's answer the client checks: the key,
// the status, and the request's fields, so another caller's record under
// the same key is never taken for this one.
type record struct {
	Key         string `json:"key"`
	Status      string `json:"status"`
	OutTradeNo  string `json:"out_trade_no"`
	OutRefundNo string `json:"out_refund_no"`
	AmountTotal int64  `json:"amount_total"`
	Amount      int64  `json:"amount"`
}

// sameRequest compares the fields of want's operation (a confirmation's
// out_trade_no and amount_total; a release's out_trade_no, out_refund_no
// and amount) that the service's record carries; those it leaves out are
// not compared.
func (rec record) sameRequest(want record) bool {
	differs := func(got, want string) bool { return got != "" && got != want }
	if differs(rec.OutTradeNo, want.OutTradeNo) {
		return false
	}
	if want.Status == statusConfirmed {
		return rec.AmountTotal == 0 || rec.AmountTotal == want.AmountTotal
	}
	return !differs(rec.OutRefundNo, want.OutRefundNo) && (rec.Amount == 0 || rec.Amount == want.Amount)
}

func (cf Confirmation) record() record {
	return record{Key: cf.Key, Status: statusConfirmed, OutTradeNo: cf.OutTradeNo, AmountTotal: cf.AmountTotal}
}

func (r Release) record() record {
	return record{Key: r.Key, Status: statusReleased, OutTradeNo: r.OutTradeNo, OutRefundNo: r.OutRefundNo, Amount: r.Amount}
}

// idleConnsPerHost is how many idle connections to the inventory service
// the client keeps: above any sensible outbox.workers.
const idleConnsPerHost = 32

// HTTP/2 health checks (variables so that a test can shorten them): over
// https the calls share one HTTP/2 connection, and one that died silently
// (no FIN, no RST: a peer or a NAT gone) would otherwise time out every
// call on it until the OS gave up on it, minutes later. A connection
// silent for h2PingAfter is pinged, and dropped h2PingTimeout after an
// unanswered ping.
var (
	h2PingAfter   = 15 * time.Second
	h2PingTimeout = 5 * time.Second
)

// New returns a Client for cfg.
func New(cfg Config) *Client {
	c := &Client{
		base:    strings.TrimRight(cfg.BaseURL, "/"),
		timeout: cfg.Timeout,
		http:    cfg.Client,
	}
	if c.timeout <= 0 {
		c.timeout = DefaultTimeout
	}
	if c.http == nil {
		// A followed 301/302 would turn the POST into a GET of another page.
		t := http.DefaultTransport.(*http.Transport).Clone()
		// The outbox workers call at once: keep a connection for each
		// (the default keeps 2 per host and opens the rest anew each time).
		t.MaxIdleConnsPerHost = idleConnsPerHost
		// The service's headers take a few hundred bytes; net/http's default
		// of 10 MiB would let a broken one hold 160 times maxResponseBody on
		// each call. Past the bound the call ends: unknown.
		t.MaxResponseHeaderBytes = 64 << 10
		t.HTTP2 = &http.HTTP2Config{SendPingTimeout: h2PingAfter, PingTimeout: h2PingTimeout,
			WriteByteTimeout: 10 * time.Second}
		c.http = &http.Client{Transport: t, CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		}}
	}
	return c
}

// Confirm confirms the stock for a paid order. It returns nil once the
// service holds the confirmation, whether this call or an earlier one with
// the same key applied it. See IsUnknown and IsPermanent for failures.
func (c *Client) Confirm(ctx context.Context, cf Confirmation) error {
	err := cf.validate()
	if err == nil {
		err = c.write(ctx, "/confirmations", cf, cf.record())
	}
	if err != nil {
		return fmt.Errorf("confirm inventory for %s: %w", cf.OutTradeNo, err)
	}
	return nil
}

// ConfirmationDone reports whether the service holds cf (by its key). A
// 404 is (false, nil); a record of the key for another order or amount is
// a permanent error matching ErrIdempotencyMismatch, never "done".
func (c *Client) ConfirmationDone(ctx context.Context, cf Confirmation) (bool, error) {
	done, err := c.done(ctx, "/confirmations/", cf.record())
	if err != nil {
		return false, fmt.Errorf("query inventory confirmation %s: %w", cf.Key, err)
	}
	return done, nil
}

// Release releases the stock for a refunded order. It returns nil once the
// service holds the release, whether this call or an earlier one with the
// same key applied it. See IsUnknown and IsPermanent for failures.
func (c *Client) Release(ctx context.Context, r Release) error {
	err := r.validate()
	if err == nil {
		err = c.write(ctx, "/releases", r, r.record())
	}
	if err != nil {
		return fmt.Errorf("release inventory for %s refund %s: %w", r.OutTradeNo, r.OutRefundNo, err)
	}
	return nil
}

// ReleaseDone reports whether the service holds r (by its key). A 404 is
// (false, nil); a record of the key for another refund or amount is a
// permanent error matching ErrIdempotencyMismatch, never "done".
func (c *Client) ReleaseDone(ctx context.Context, r Release) (bool, error) {
	done, err := c.done(ctx, "/releases/", r.record())
	if err != nil {
		return false, fmt.Errorf("query inventory release %s: %w", r.Key, err)
	}
	return done, nil
}

func (cf Confirmation) validate() error {
	if cf.Key == "" || cf.OutTradeNo == "" || cf.AmountTotal <= 0 {
		return invalidRequest("confirmation needs key, out_trade_no and a positive amount_total")
	}
	return nil
}

func (r Release) validate() error {
	if r.Key == "" || r.OutRefundNo == "" || r.OutTradeNo == "" || r.Amount <= 0 {
		return invalidRequest("release needs key, out_refund_no, out_trade_no and a positive amount")
	}
	return nil
}

// write POSTs body and expects a 2xx record matching want.
func (c *Client) write(ctx context.Context, path string, body any, want record) error {
	payload, err := json.Marshal(body)
	if err != nil {
		return fmt.Errorf("encode request: %w", err)
	}
	status, resp, err := c.do(ctx, http.MethodPost, path, want.Key, payload)
	if err != nil {
		return err
	}
	if status/100 != 2 {
		return statusError(status, errorCode(resp), resp)
	}
	return checkRecord(resp, want)
}

// done GETs the record for key: 2xx is true, the service's own 404
// ({"code":"NOT_FOUND"}) is false. Any other answer is no verdict, so the
// outcome stays unknown and the job is retried: another 404 (a proxy, a
// deploy without the route) read as "not applied" would send the operation
// again blind, and a 4xx to the query (credentials rotated, a WAF) says
// nothing about whether an earlier send was applied, so it must not
// dead-letter the job as "not applied" (and, for a confirmation, hold
// every release of the order behind it).
func (c *Client) done(ctx context.Context, path string, want record) (bool, error) {
	if want.Key == "" {
		return false, invalidRequest("empty key")
	}
	status, resp, err := c.do(ctx, http.MethodGet, path+url.PathEscape(want.Key), want.Key, nil)
	switch {
	case err != nil:
		return false, err
	case status == http.StatusNotFound && errorCode(resp) == "NOT_FOUND":
		return false, nil
	case status/100 != 2:
		return false, fmt.Errorf("%w: the status query answered %d (code %q)", ErrUnknownOutcome, status, errorCode(resp))
	}
	if err := checkRecord(resp, want); err != nil {
		return false, err
	}
	return true, nil
}

// do sends one request bounded by the per-call timeout and reads the answer.
// Any failure after the request was built leaves the outcome unknown.
func (c *Client) do(ctx context.Context, method, path, key string, payload []byte) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	req, err := c.newRequest(ctx, method, path, key, payload)
	if err != nil {
		return 0, nil, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("%w: %s %s: %w", ErrUnknownOutcome, method, path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBody))
	if err != nil {
		return 0, nil, fmt.Errorf("%w: read %s %s answer: %w", ErrUnknownOutcome, method, path, err)
	}
	return resp.StatusCode, body, nil
}

func (c *Client) newRequest(ctx context.Context, method, path, key string, payload []byte) (*http.Request, error) {
	var body io.Reader = http.NoBody
	if payload != nil {
		body = bytes.NewReader(payload)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return nil, fmt.Errorf("build %s %s request: %w", method, path, err)
	}
	// The header alone would let net/http send a write again at once when
	// its kept-alive connection drops after the request went out, though it
	// may have been applied: without GetBody it does not, and the outcome
	// is unknown, for the next attempt to ask about first (never re-send a
	// stock operation blind). That includes a stale connection found dead
	// before anything was written: rare, and it costs one backoff.
	req.Header.Set("Idempotency-Key", key)
	if payload != nil {
		req.GetBody = nil
	}
	req.Header.Set("Accept", "application/json")
	if payload != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return req, nil
}

// checkRecord guards against a 2xx that is not the service's record, such as
// a proxy page: the client cannot tell what happened, so the outcome is
// unknown. A record of the key whose order, refund or amount differ from
// the request's is another caller's (a key collision): this operation was
// not applied, and calling it done would, say, let a refund's release go
// ahead of a confirmation that never happened. Fields the service leaves
// out are not compared.
func checkRecord(body []byte, want record) error {
	var rec record
	if err := json.Unmarshal(body, &rec); err != nil {
		return fmt.Errorf("%w: decode record: %w", ErrUnknownOutcome, err)
	}
	if rec.Key != want.Key || rec.Status != want.Status {
		return fmt.Errorf("%w: unexpected record (same key %t, status %q)", ErrUnknownOutcome, rec.Key == want.Key,
			cutQuoted(rec.Status))
	}
	if !rec.sameRequest(want) {
		return errors.Join(&PermanentError{Status: http.StatusOK, Code: "IDEMPOTENCY_MISMATCH", Body: truncate(body, maxErrorBody)},
			ErrIdempotencyMismatch)
	}
	return nil
}

// errorCode extracts {"code": ...} from an error answer, or "".
func errorCode(body []byte) string {
	var e struct {
		Code string `json:"code"`
	}
	if err := json.Unmarshal(body, &e); err != nil {
		return ""
	}
	return cutQuoted(e.Code)
}

// maxQuoted bounds what an error quotes of an answer's code or status:
// the service's are short words, and the error is logged at every attempt
// of a job (a proxy's page in JSON, up to maxResponseBody, would be
// logged whole each time).
const maxQuoted = 64

func cutQuoted(s string) string {
	if len(s) <= maxQuoted {
		return s
	}
	n := maxQuoted
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}
