package wechatpay

import (
	"context"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/wechatpay-apiv3/wechatpay-go/core"
	"github.com/wechatpay-apiv3/wechatpay-go/core/auth"
	"github.com/wechatpay-apiv3/wechatpay-go/core/auth/validators"
	"github.com/wechatpay-apiv3/wechatpay-go/core/consts"
	"github.com/wechatpay-apiv3/wechatpay-go/core/option"
	"github.com/wechatpay-apiv3/wechatpay-go/services/payments"
	"github.com/wechatpay-apiv3/wechatpay-go/services/payments/jsapi"
	"github.com/wechatpay-apiv3/wechatpay-go/services/refunddomestic"

	"paygateway/gateway"
)

// defaultClientTimeout bounds one API call when ClientConfig.Timeout is 0.
const defaultClientTimeout = 10 * time.Second

// DefaultBillTimeout bounds a bill download when ClientConfig.BillTimeout
// is 0. A bill can be tens of megabytes: the per-call timeout is too short.
const DefaultBillTimeout = 5 * time.Minute

// maxBillSize bounds a downloaded trade bill (a variable so that a test
// can lower it).
var maxBillSize int64 = 256 << 20

// Errors returned by Client. Callers decide with errors.Is / errors.As:
//   - ErrNotFound: WeChat Pay answered that the order or refund does not
//     exist (404 ORDER_NOT_EXIST or RESOURCE_NOT_EXISTS). It is believed
//     unsigned too (see the README: requiring a signature would leave
//     refunds UNKNOWN for good should WeChat Pay not sign its 404s), and
//     logged at warn then, so that a proxy answering for WeChat Pay shows.
//   - ErrUnknownOutcome: no trustworthy answer (timeout, reset, 5xx, 429, bad
//     response signature); WeChat may or may not have applied the call, so
//     query before retrying, and retry a refund only with the same out_refund_no.
//   - *BusinessError: any other 4xx, a refusal. wechatpay-go does not verify
//     the signature of error answers; the client does, and sets Verified
//     only when it holds. An unsigned refusal may be a proxy's or a WAF's,
//     sent after WeChat Pay took the call (see gateway.RefundService).
var (
	ErrNotFound = errors.New("wechatpay: not found")
	// ErrRateLimited comes with ErrUnknownOutcome for a 429 or
	// FREQUENCY_LIMITED: the merchant is over WeChat Pay's quota, and more
	// calls now only keep it there.
	ErrRateLimited      = errors.New("wechatpay: rate limited")
	ErrUnknownOutcome   = errors.New("wechatpay: outcome unknown")
	ErrInvalidSignature = errors.New("wechatpay: response signature invalid")
)

// BusinessError is a definite refusal by WeChat Pay (a 4xx other than
// not-found), e.g. 403 NOT_ENOUGH or 401 SIGN_ERROR.
type BusinessError struct {
	Status    int
	Code      string
	Message   string
	RequestID string
	// Verified: the answer carries a valid WeChat Pay signature, so it is
	// WeChat Pay's own verdict.
	Verified bool
}

// Error implements error.
func (e *BusinessError) Error() string {
	unsigned := ""
	if !e.Verified {
		unsigned = " (unsigned)"
	}
	return fmt.Sprintf("wechatpay: %d %s: %s (request-id %s)%s", e.Status, e.Code, e.Message, e.RequestID, unsigned)
}

// IsUnknownOutcome reports whether err leaves open whether WeChat Pay applied
// the call.
func IsUnknownOutcome(err error) bool { return errors.Is(err, ErrUnknownOutcome) }

// ClientConfig configures Client.
type ClientConfig struct {
	MchID, AppID   string
	MerchantSerial string          // merchant API certificate serial
	MerchantKey    *rsa.PrivateKey // merchant API private key; signs requests
	PublicKeyID    string          // "PUB_KEY_ID_…"
	PublicKey      *rsa.PublicKey  // WeChat Pay public key; verifies answers, encrypts sensitive fields
	// Certificates are the platform certificates (optional). During the
	// switch to the public key WeChat Pay signs answers with either, the
	// Wechatpay-Serial header saying which; one used outside its validity
	// period verifies nothing.
	Certificates []*x509.Certificate
	// Now is the clock certificate validity is checked against; default time.Now.
	Now func() time.Time
	// BaseURL replaces the scheme and host of WeChat Pay's API
	// (https://api.mch.weixin.qq.com) when set, e.g. to reach a simulator.
	// It must not have a path: the request signature covers the request URI.
	BaseURL string
	// Timeout bounds each call, including reading the answer; default 10 s.
	Timeout time.Duration
	// BillTimeout bounds the download of a bill file, including reading
	// it; default 5 min. The request for the download link takes Timeout.
	BillTimeout     time.Duration
	RefundNotifyURL string       // notify_url sent with refunds; "" = the merchant default
	Logger          *slog.Logger // default slog.Default()
}

func (cfg ClientConfig) validate() error {
	switch {
	case cfg.MchID == "" || cfg.AppID == "":
		return errors.New("mchid and appid are required")
	case cfg.MerchantSerial == "" || cfg.MerchantKey == nil:
		return errors.New("merchant serial and private key are required")
	case cfg.PublicKeyID == "" || cfg.PublicKey == nil:
		return errors.New("wechat pay public key id and public key are required")
	}
	for _, c := range cfg.Certificates {
		if !rsaCertificate(c) { // the SDK's verifier would panic on it
			return errors.New("platform certificates must be RSA certificates")
		}
	}
	return nil
}

func rsaCertificate(c *x509.Certificate) bool {
	if c == nil {
		return false
	}
	_, ok := c.PublicKey.(*rsa.PublicKey)
	return ok
}

// Client calls the WeChat Pay v3 API: order query, refunds and trade bills.
// It is safe for concurrent use.
type Client struct {
	cfg      ClientConfig
	log      *slog.Logger
	api      *core.Client                           // signs requests, verifies responses
	raw      *core.Client                           // signs requests, no response verification (bill download)
	refusals *validators.WechatPayResponseValidator // verifies error answers (wechatpay-go does not)
	unsigned unsignedNotFound                       // unsigned "not found" answers, logged at most once a minute
	jsapi    jsapi.JsapiApiService
	refunds  refunddomestic.RefundsApiService
}

// NewClient builds a client: requests signed with the merchant key,
// sensitive fields encrypted with the public key, answers verified with the
// public key and the platform certificates. It does not touch the network.
func NewClient(ctx context.Context, cfg ClientConfig) (*Client, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("new wechatpay client: %w", err)
	}
	hc, download, err := newHTTPClients(cfg)
	if err != nil {
		return nil, fmt.Errorf("new wechatpay client: %w", err)
	}
	verifier := answerVerifier(cfg)
	// Options apply in order: WithVerifier replaces the public-key-only
	// validator the auth-cipher option sets, and keeps its signer and cipher.
	api, err := core.NewClient(ctx,
		option.WithWechatPayPublicKeyAuthCipher(cfg.MchID, cfg.MerchantSerial, cfg.MerchantKey, cfg.PublicKeyID, cfg.PublicKey),
		option.WithVerifier(verifier), option.WithHTTPClient(hc))
	if err != nil {
		return nil, fmt.Errorf("new wechatpay client: %w", err)
	}
	// Bill files are served unsigned, so downloads skip response validation.
	raw, err := core.NewClient(ctx,
		option.WithMerchantCredential(cfg.MchID, cfg.MerchantSerial, cfg.MerchantKey),
		option.WithoutValidator(), option.WithHTTPClient(download))
	if err != nil {
		return nil, fmt.Errorf("new wechatpay client: %w", err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Client{
		cfg: cfg, log: log, api: api, raw: raw,
		refusals: validators.NewWechatPayResponseValidator(verifier),
		jsapi:    jsapi.JsapiApiService{Client: api},
		refunds:  refunddomestic.RefundsApiService{Client: api},
	}, nil
}

// answerVerifier verifies WeChat Pay's answers, 2xx and refusals alike,
// as notifications are: with the public key and the platform certificates,
// a certificate only within its validity period.
func answerVerifier(cfg ClientConfig) auth.Verifier {
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	return inForceVerifier{next: keyVerifier(cfg.PublicKeyID, cfg.PublicKey, cfg.Certificates),
		certs: certsBySerial(cfg.Certificates), now: now}
}

// inForceVerifier refuses a signature under a platform certificate outside
// its validity period (checked at each answer: a certificate may expire
// while the process runs), then defers to next.
type inForceVerifier struct {
	next  auth.Verifier
	certs map[string]*x509.Certificate
	now   func() time.Time
}

// Verify implements auth.Verifier.
func (v inForceVerifier) Verify(ctx context.Context, serial, message, signature string) error {
	if err := certOutOfForce(v.certs, serial, v.now()); err != nil {
		return err
	}
	return v.next.Verify(ctx, serial, message, signature)
}

// GetSerial implements auth.Verifier: the public key's id (the SDK sends
// it as the request's Wechatpay-Serial: the key sensitive fields are
// encrypted with).
func (v inForceVerifier) GetSerial(ctx context.Context) (string, error) { return v.next.GetSerial(ctx) }

// newHTTPClients returns the API calls' HTTP client, with the call timeout,
// answers capped at maxAnswer, and the bill downloads', with the bill
// timeout and only error answers capped (a bill file may be far larger;
// download caps it itself). Neither follows a redirect. They share one
// transport (connections, and, when BaseURL is set, the host rewriting:
// wechatpay-go hard-codes its host).
func newHTTPClients(cfg ClientConfig) (api, download *http.Client, err error) {
	rt, err := baseTransport(cfg)
	if err != nil {
		return nil, nil, err
	}
	timeout, billTimeout := cfg.Timeout, cfg.BillTimeout
	if timeout <= 0 {
		timeout = defaultClientTimeout
	}
	if billTimeout <= 0 {
		billTimeout = DefaultBillTimeout
	}
	return &http.Client{Timeout: timeout, Transport: capAnswers{next: rt, okLimit: maxAnswer}, CheckRedirect: noRedirects},
		&http.Client{Timeout: billTimeout, Transport: capAnswers{next: rt}, CheckRedirect: noRedirects}, nil
}

// noRedirects keeps an API call's answer as it came: WeChat Pay's API never
// redirects, and a followed 302 would turn a POST into a GET of another
// page, whose answer ("not found", believed unsigned) would then pass for
// WeChat Pay's verdict on a call it never got. A 3xx is an unknown outcome.
// A followed bill download would send its signed request (net/http keeps
// the Authorization header for the same host name, over http:// too) and
// take the day's bill from wherever the redirect points.
func noRedirects(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// baseTransport is newTransport with the BaseURL host rewriting.
func baseTransport(cfg ClientConfig) (http.RoundTripper, error) {
	var rt http.RoundTripper = newTransport()
	if cfg.BaseURL != "" {
		u, err := url.Parse(cfg.BaseURL)
		if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
			return nil, fmt.Errorf("base url %q: want scheme://host[:port]", cfg.BaseURL)
		}
		if strings.Trim(u.Path, "/") != "" || u.RawQuery != "" {
			return nil, fmt.Errorf("base url %q: must not have a path or query", cfg.BaseURL)
		}
		rt = &baseURLTransport{scheme: u.Scheme, host: u.Host, next: rt}
	}
	return rt, nil
}

// maxAnswer bounds what of one of WeChat Pay's answers is read into
// memory. Its API answers are a few KB, but the SDK reads whole bodies,
// error answers too before the gateway sees them: a proxy's endless error
// page would otherwise fill memory for as long as the call's timeout.
const maxAnswer = 1 << 20

// errAnswerTooLarge is an answer cut off at maxAnswer: no verdict, so a
// money call that got one has an unknown outcome.
var errAnswerTooLarge = errors.New("wechatpay: answer over 1 MiB, not read")

// capAnswers makes reading an answer's body past its cap fail: maxAnswer
// for an error answer, okLimit for a 2xx one (0: none).
type capAnswers struct {
	next    http.RoundTripper
	okLimit int64
}

// RoundTrip implements http.RoundTripper.
func (t capAnswers) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := t.next.RoundTrip(r)
	if err != nil {
		return resp, err
	}
	limit := int64(maxAnswer)
	if resp.StatusCode < 300 {
		limit = t.okLimit
	}
	if limit > 0 {
		resp.Body = &cappedBody{rc: resp.Body, limit: limit}
	}
	return resp, nil
}

// cappedBody reads at most limit bytes of rc, and fails (closing rc, so
// the connection is dropped, not drained) when there are more.
type cappedBody struct {
	rc          io.ReadCloser
	limit, read int64
}

func (b *cappedBody) Read(p []byte) (int, error) {
	if b.read > b.limit {
		return 0, errAnswerTooLarge
	}
	p = p[:min(int64(len(p)), b.limit+1-b.read)]
	n, err := b.rc.Read(p)
	if b.read += int64(n); b.read > b.limit {
		_ = b.rc.Close()
		return 0, errAnswerTooLarge
	}
	return n, err
}

func (b *cappedBody) Close() error { return b.rc.Close() }

// Connections to WeChat Pay's host. Refunds, queries and bill downloads
// share it: the default transport keeps 2 idle connections per host, so
// after a burst most calls would pay a new TLS handshake.
const (
	idleConnsPerHost = 32
	maxConnsPerHost  = 64 // beyond it a call waits for a connection, within its timeout
)

// newTransport is the default transport with WeChat Pay's connection
// limits, and HTTP/2 health checks: over HTTP/2 every call shares one
// connection, and one that died silently (no FIN, no RST) would otherwise
// time out every call on it until the OS gave up on it, minutes later. A
// connection silent for 15 s is pinged and dropped 5 s after an
// unanswered ping.
func newTransport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = idleConnsPerHost
	t.MaxConnsPerHost = maxConnsPerHost
	// WeChat Pay's headers take a few hundred bytes; net/http's default of
	// 10 MiB would let a broken peer hold ten times maxAnswer on each of
	// maxConnsPerHost calls. Past the bound the call ends: unknown.
	t.MaxResponseHeaderBytes = maxAnswerHeaders
	t.HTTP2 = &http.HTTP2Config{SendPingTimeout: 15 * time.Second, PingTimeout: 5 * time.Second,
		WriteByteTimeout: 10 * time.Second}
	return t
}

// maxAnswerHeaders bounds an answer's headers.
const maxAnswerHeaders = 64 << 10

// baseURLTransport sends requests for WeChat Pay's API hosts to another
// scheme and host. Safe because the signature covers only method and URI.
type baseURLTransport struct {
	scheme, host string
	next         http.RoundTripper
}

// wechatPayHosts are the hosts baseURLTransport redirects.
var wechatPayHosts = map[string]bool{
	strings.TrimPrefix(consts.WechatPayAPIServer, "https://"):       true,
	strings.TrimPrefix(consts.WechatPayAPIServerBackup, "https://"): true,
}

// RoundTrip implements http.RoundTripper.
func (t *baseURLTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if !wechatPayHosts[r.URL.Host] {
		return t.next.RoundTrip(r)
	}
	out := r.Clone(r.Context()) // a RoundTripper must not modify its request
	out.URL.Scheme, out.URL.Host, out.Host = t.scheme, t.host, ""
	return t.next.RoundTrip(out)
}

// Transaction is the part of a WeChat Pay order the gateway uses. Amounts
// are fen; SuccessTime is UTC (zero unless paid).
type Transaction struct {
	OutTradeNo     string
	TransactionID  string
	TradeState     string // SUCCESS, REFUND, NOTPAY, CLOSED, REVOKED, USERPAYING, PAYERROR
	TradeStateDesc string
	AppID, MchID   string
	PayerOpenID    string
	AmountTotal    int64
	PayerTotal     int64
	Currency       string
	SuccessTime    time.Time
}

// Paid reports whether WeChat Pay took the order's money (it may have
// refunded it since: trade_state REFUND).
func (t *Transaction) Paid() bool { return t.TradeState == "SUCCESS" || t.TradeState == "REFUND" }

// QueryOrder looks an order up by out_trade_no. Errors: ErrNotFound,
// ErrUnknownOutcome, *BusinessError.
func (c *Client) QueryOrder(ctx context.Context, outTradeNo string) (*Transaction, error) {
	tx, result, err := c.jsapi.QueryOrderByOutTradeNo(ctx, jsapi.QueryOrderByOutTradeNoRequest{
		OutTradeNo: core.String(outTradeNo), Mchid: core.String(c.cfg.MchID),
	})
	if err != nil {
		return nil, c.fail(ctx, "query order", outTradeNo, result, err)
	}
	out, err := toTransaction(tx)
	if err != nil {
		return nil, fmt.Errorf("query order %s: %w: %w", outTradeNo, ErrUnknownOutcome, err)
	}
	return out, nil
}

// CloseOrder closes an unpaid order at WeChat Pay so that it can no longer
// be paid. A paid or already closed order comes back as a *BusinessError
// (ORDERPAID, ORDER_CLOSED), an unknown one as ErrNotFound; either way,
// query the order for its state.
func (c *Client) CloseOrder(ctx context.Context, outTradeNo string) error {
	result, err := c.jsapi.CloseOrder(ctx, jsapi.CloseOrderRequest{
		OutTradeNo: core.String(outTradeNo), Mchid: core.String(c.cfg.MchID),
	})
	if err != nil {
		return c.fail(ctx, "close order", outTradeNo, result, err)
	}
	return nil
}

func toTransaction(tx *payments.Transaction) (*Transaction, error) {
	out := &Transaction{
		OutTradeNo: deref(tx.OutTradeNo), TransactionID: deref(tx.TransactionId),
		TradeState: deref(tx.TradeState), TradeStateDesc: deref(tx.TradeStateDesc),
		AppID: deref(tx.Appid), MchID: deref(tx.Mchid),
	}
	if tx.Payer != nil {
		out.PayerOpenID = deref(tx.Payer.Openid)
	}
	if a := tx.Amount; a != nil {
		out.AmountTotal, out.PayerTotal, out.Currency = deref(a.Total), deref(a.PayerTotal), deref(a.Currency)
	}
	if s := deref(tx.SuccessTime); s != "" {
		t, err := time.Parse(time.RFC3339, s)
		if err != nil {
			return nil, fmt.Errorf("success_time %q: %w", s, err)
		}
		out.SuccessTime = t.UTC()
	}
	return out, nil
}

// RefundRequest asks for a refund of Amount out of the order's paid Total
// (both fen). OutRefundNo is the idempotency key: reuse it on every retry.
type RefundRequest struct {
	OutTradeNo  string
	OutRefundNo string
	Reason      string
	Amount      int64
	Total       int64
}

func (r RefundRequest) validate() error {
	switch {
	case r.OutTradeNo == "" || r.OutRefundNo == "":
		return errors.New("out_trade_no and out_refund_no are required")
	case r.Amount <= 0 || r.Total <= 0 || r.Amount > r.Total:
		return fmt.Errorf("amounts must satisfy 0 < refund (%d) <= total (%d)", r.Amount, r.Total)
	}
	return nil
}

// Refund is the part of a WeChat Pay refund the gateway uses. Amounts are
// fen; times are UTC (SuccessTime zero unless SUCCESS).
type Refund struct {
	OutRefundNo   string
	RefundID      string
	OutTradeNo    string
	TransactionID string
	Status        string // PROCESSING, SUCCESS, CLOSED, ABNORMAL
	Amount        int64
	Total         int64
	CreateTime    time.Time
	SuccessTime   time.Time
}

// CreateRefund requests a refund. Success means accepted (usually
// PROCESSING), not paid out. A repeated OutRefundNo returns the existing
// refund. Errors: ErrNotFound (order unknown or unpaid), ErrUnknownOutcome
// (query with QueryRefund before retrying), *BusinessError (e.g. NOT_ENOUGH).
func (c *Client) CreateRefund(ctx context.Context, req RefundRequest) (*Refund, error) {
	if err := req.validate(); err != nil {
		return nil, fmt.Errorf("create refund %s: %w", req.OutRefundNo, err)
	}
	body := refunddomestic.CreateRequest{
		OutTradeNo:  core.String(req.OutTradeNo),
		OutRefundNo: core.String(req.OutRefundNo),
		Amount: &refunddomestic.AmountReq{
			Refund: core.Int64(req.Amount), Total: core.Int64(req.Total), Currency: core.String("CNY"),
		},
	}
	if req.Reason != "" {
		body.Reason = core.String(req.Reason)
	}
	if c.cfg.RefundNotifyURL != "" {
		body.NotifyUrl = core.String(c.cfg.RefundNotifyURL)
	}
	r, result, err := c.refunds.Create(ctx, body)
	if err != nil {
		return nil, c.fail(ctx, "create refund", req.OutRefundNo, result, err)
	}
	return toRefund(r), nil
}

// QueryRefund looks a refund up by out_refund_no. Errors: ErrNotFound,
// ErrUnknownOutcome, *BusinessError.
func (c *Client) QueryRefund(ctx context.Context, outRefundNo string) (*Refund, error) {
	r, result, err := c.refunds.QueryByOutRefundNo(ctx, refunddomestic.QueryByOutRefundNoRequest{
		OutRefundNo: core.String(outRefundNo),
	})
	if err != nil {
		return nil, c.fail(ctx, "query refund", outRefundNo, result, err)
	}
	return toRefund(r), nil
}

func toRefund(r *refunddomestic.Refund) *Refund {
	out := &Refund{
		OutRefundNo: deref(r.OutRefundNo), RefundID: deref(r.RefundId),
		OutTradeNo: deref(r.OutTradeNo), TransactionID: deref(r.TransactionId),
		CreateTime: derefTime(r.CreateTime), SuccessTime: derefTime(r.SuccessTime),
	}
	if r.Status != nil {
		out.Status = string(*r.Status)
	}
	if r.Amount != nil {
		out.Amount, out.Total = deref(r.Amount.Refund), deref(r.Amount.Total)
	}
	return out
}

// billLink is the answer of GET /v3/bill/tradebill.
type billLink struct {
	HashType    string `json:"hash_type"`
	HashValue   string `json:"hash_value"`
	DownloadURL string `json:"download_url"`
}

// TradeBill downloads the ALL trade bill of billDate ("YYYY-MM-DD", a
// UTC+8 day) and checks its SHA1. WeChat answers 400 NO_STATEMENT_EXIST
// (*BusinessError) for a day without transactions or not yet generated (T+1).
func (c *Client) TradeBill(ctx context.Context, billDate string) ([]byte, error) {
	if _, err := time.Parse(time.DateOnly, billDate); err != nil {
		return nil, fmt.Errorf("trade bill %s: %w", billDate, err)
	}
	q := url.Values{"bill_date": {billDate}, "bill_type": {"ALL"}}
	result, err := c.api.Get(ctx, consts.WechatPayAPIServer+"/v3/bill/tradebill?"+q.Encode())
	if err != nil {
		return nil, c.fail(ctx, "trade bill", billDate, result, err)
	}
	var link billLink
	if err := core.UnMarshalResponse(result.Response, &link); err != nil {
		return nil, fmt.Errorf("trade bill %s: decode: %w", billDate, err)
	}
	data, err := c.download(ctx, link)
	if err != nil {
		return nil, fmt.Errorf("trade bill %s: %w", billDate, err)
	}
	return data, nil
}

// download fetches a bill file (signed request, unsigned answer) and checks
// its hash.
func (c *Client) download(ctx context.Context, link billLink) ([]byte, error) {
	if !strings.EqualFold(link.HashType, "SHA1") {
		return nil, fmt.Errorf("unsupported hash_type %q", link.HashType)
	}
	result, err := c.raw.Get(ctx, link.DownloadURL)
	if err != nil {
		return nil, c.fail(ctx, "download", "bill", result, withoutQuery(err))
	}
	defer result.Response.Body.Close()
	data, err := io.ReadAll(io.LimitReader(result.Response.Body, maxBillSize+1))
	if err != nil {
		return nil, fmt.Errorf("download: %w", err)
	}
	if int64(len(data)) > maxBillSize {
		return nil, fmt.Errorf("download: over %d bytes: %w", maxBillSize, gateway.ErrBillTooLarge)
	}
	sum := sha1.Sum(data)
	if got := hex.EncodeToString(sum[:]); !strings.EqualFold(got, link.HashValue) {
		return nil, fmt.Errorf("download: sha1 %s, want %s", got, link.HashValue)
	}
	return data, nil
}

// withoutQuery drops the query (the download link's token) from the
// address a *url.Error quotes: the error is logged.
func withoutQuery(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		if u, perr := url.Parse(ue.URL); perr == nil {
			u.RawQuery = ""
			ue.URL = u.String()
		}
	}
	return err
}

// fail classifies a failed call and wraps it with the operation and key.
func (c *Client) fail(ctx context.Context, op, key string, result *core.APIResult, err error) error {
	classified := classify(result, err)
	var be *BusinessError
	var apiErr *core.APIError
	if errors.As(err, &apiErr) {
		switch {
		case errors.As(classified, &be):
			be.Verified = c.signedByWechat(ctx, apiErr)
		case errors.Is(classified, ErrNotFound) && !c.signedByWechat(ctx, apiErr):
			c.unsigned.note(ctx, c.log, op, key)
		}
	}
	err = fmt.Errorf("%s %s: %w", op, key, classified)
	if IsUnknownOutcome(err) {
		c.log.WarnContext(ctx, "wechatpay: outcome unknown", "op", op, "key", key, "err", err)
	}
	return err
}

// signedByWechat reports whether an error answer carries a valid WeChat
// Pay signature over its body (timestamp, nonce and serial included).
func (c *Client) signedByWechat(ctx context.Context, e *core.APIError) bool {
	resp := &http.Response{StatusCode: e.StatusCode, Header: e.Header, Body: io.NopCloser(strings.NewReader(e.Body))}
	return c.refusals.Validate(ctx, resp) == nil
}

// classify maps a wechatpay-go error to ErrNotFound, ErrUnknownOutcome or
// *BusinessError. Errors raised before sending stay as they are.
func classify(result *core.APIResult, err error) error {
	var apiErr *core.APIError
	switch {
	case errors.As(err, &apiErr):
		return classifyAPIError(apiErr)
	case result == nil:
		return err // never sent: bad request fields or signing failure
	case result.Response == nil || isTransportError(err):
		return fmt.Errorf("%w: %w", ErrUnknownOutcome, err)
	case isDecodeError(err):
		return fmt.Errorf("%w: decode response: %w", ErrUnknownOutcome, err)
	default:
		// A 2xx whose signature did not verify: it may have been applied,
		// but the answer cannot be trusted. (wechatpay-go's error quotes
		// the answer's Request-ID and serial headers: cut.)
		return fmt.Errorf("%w: %w: %w", ErrUnknownOutcome, ErrInvalidSignature, quotedError{err})
	}
}

// What an error quotes of an answer: WeChat Pay's codes are under 32
// bytes, its messages a sentence, its request ids about 40 bytes. An
// error page of a proxy or a WAF (up to maxAnswer read) quoted whole
// would be logged whole by every call that met it.
const (
	maxQuotedCode      = 64
	maxQuotedMessage   = 512
	maxQuotedRequestID = 128
	maxQuotedError     = 1024
)

// quotedError is an error whose text quotes an answer, cut to
// maxQuotedError; errors.Is and errors.As see the error whole.
type quotedError struct{ err error }

func (q quotedError) Error() string { return cutText(q.err.Error(), maxQuotedError) }
func (q quotedError) Unwrap() error { return q.err }

// cutText cuts s to at most n bytes on a character boundary, marking the cut.
func cutText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

// retryCodes are error codes WeChat Pay documents as "try again with the
// same request" (SYSTEM_ERROR, FREQUENCY_LIMITED, BIZ_ERR_NEED_RETRY):
// whatever status they come with, they are no verdict on the call.
var retryCodes = map[string]bool{"SYSTEM_ERROR": true, "FREQUENCY_LIMITED": true, "BIZ_ERR_NEED_RETRY": true}

func classifyAPIError(e *core.APIError) error {
	requestID := cutText(e.Header.Get(consts.RequestID), maxQuotedRequestID)
	code, message := cutText(e.Code, maxQuotedCode), cutText(e.Message, maxQuotedMessage)
	switch {
	case e.StatusCode == http.StatusNotFound && (e.Code == "ORDER_NOT_EXIST" || e.Code == "RESOURCE_NOT_EXISTS"):
		return fmt.Errorf("%w: %s %s (request-id %s)", ErrNotFound, code, message, requestID)
	case e.StatusCode == http.StatusTooManyRequests || e.Code == "FREQUENCY_LIMITED":
		return fmt.Errorf("%w: %w: http %d %s %s (request-id %s)", ErrUnknownOutcome, ErrRateLimited, e.StatusCode, code,
			message, requestID)
	case e.StatusCode >= 500 || e.StatusCode < 400 || retryCodes[e.Code]:
		return fmt.Errorf("%w: http %d %s %s (request-id %s)", ErrUnknownOutcome, e.StatusCode, code, message, requestID)
	default:
		return &BusinessError{Status: e.StatusCode, Code: code, Message: message, RequestID: requestID}
	}
}

// isTransportError reports network failures while reading the answer.
func isTransportError(err error) bool {
	var netErr net.Error
	return errors.As(err, &netErr) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, context.Canceled) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, io.EOF) || errors.Is(err, errAnswerTooLarge) ||
		// The SDK's validator flattens body read errors into text.
		strings.Contains(err.Error(), "read response body")
}

func isDecodeError(err error) bool {
	var syntaxErr *json.SyntaxError
	var typeErr *json.UnmarshalTypeError
	return errors.As(err, &syntaxErr) || errors.As(err, &typeErr)
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

func derefTime(t *time.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return t.UTC()
}

// unsignedNotFound counts the "not found" answers WeChat Pay did not sign
// and logs them at most once a minute, with how many came since the last
// line: should WeChat Pay not sign its 404s at all, a line per order
// check would bury everything else.
type unsignedNotFound struct {
	count  atomic.Int64
	logged atomic.Int64 // unix nanoseconds of the last line
}

func (u *unsignedNotFound) note(ctx context.Context, log *slog.Logger, op, key string) {
	n := u.count.Add(1)
	now, last := time.Now().UnixNano(), u.logged.Load()
	if now-last < int64(time.Minute) || !u.logged.CompareAndSwap(last, now) {
		return
	}
	u.count.Add(-n)
	log.WarnContext(ctx, "wechatpay: not found, unsigned: believed", "op", op, "key", key, "since_last_line", n)
}
