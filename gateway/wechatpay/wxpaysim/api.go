package wxpaysim

import (
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// maxRequestBody bounds what the simulator reads from a request.
const maxRequestBody = 1 << 20

// maxSkew is how far the merchant's signature timestamp may be from now.
const maxSkew = 5 * time.Minute

// reply is a handler's answer, written by api (or discarded by a fault).
type reply struct {
	status   int
	body     []byte
	raw      bool // unsigned, not JSON (bill download)
	unsigned bool // JSON, but not signed (a request whose signature failed)
	// missed is the out_refund_no a refund query did not find: counted
	// (see RefundsResentBlind) only once the answer is written as is.
	missed string
}

// apiFunc handles an authenticated merchant API request.
type apiFunc func(r *http.Request, body []byte) reply

// apiError is WeChat's error body.
type apiError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func jsonReply(status int, v any) reply {
	body, err := json.Marshal(v)
	if err != nil {
		return errReply(http.StatusInternalServerError, "SYSTEM_ERROR", err.Error())
	}
	return reply{status: status, body: body}
}

func errReply(status int, code, message string) reply {
	body, _ := json.Marshal(apiError{Code: code, Message: message}) // cannot fail
	return reply{status: status, body: body}
}

// api wraps a merchant API handler with fault injection, merchant signature
// verification and response signing.
func (s *Sim) api(h apiFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, maxRequestBody))
		if err != nil {
			abort(w)
			return
		}
		f := s.takeFault(r.Method, r.URL.Path)
		if !s.sleep(r.Context(), f.delay) {
			abort(w)
			return
		}
		switch f.kind {
		case faultFail5xx:
			s.write(w, errReply(http.StatusInternalServerError, "SYSTEM_ERROR", "系统错误"))
			return
		case faultDrop:
			abort(w)
			return
		case faultOrderUnknown:
			s.write(w, errReply(http.StatusNotFound, "RESOURCE_NOT_EXISTS", "订单不存在"))
			return
		case faultFrequencyLimited:
			s.write(w, errReply(http.StatusTooManyRequests, "FREQUENCY_LIMITED", "频率超限"))
			return
		case faultNotEnough:
			s.write(w, errReply(http.StatusForbidden, "NOT_ENOUGH", "基本账户余额不足，请充值后重新发起"))
			return
		}
		rep, ok := s.authenticate(r, body)
		if ok {
			rep = h(r, body)
		}
		switch f.kind {
		case faultApplyThenTimeout:
			s.sleep(r.Context(), f.hold)
			abort(w)
			return
		case faultApplyThenForbidden:
			if ok { // applied: the proxy hides WeChat Pay's answer
				rep = reply{status: http.StatusForbidden, body: []byte("403 Forbidden"), raw: true}
			}
		}
		if rep.missed != "" {
			s.countRefundMiss(rep.missed)
		}
		s.write(w, rep)
	}
}

// abort closes the connection without answering, like a lost network path.
func abort(w http.ResponseWriter) {
	if hj, ok := w.(http.Hijacker); ok {
		if conn, _, err := hj.Hijack(); err == nil {
			_ = conn.Close()
			return
		}
	}
	panic(http.ErrAbortHandler) // net/http closes the connection silently
}

// write sends rep, signed (unless raw or unsigned) with the key of the
// current sign mode, as notifications are: during the switch to the public
// key WeChat Pay signs its answers with either key.
func (s *Sim) write(w http.ResponseWriter, rep reply) {
	requestID, _ := randomHex(16)
	h := w.Header()
	h.Set(headerRequestID, requestID)
	switch {
	case rep.raw:
		h.Set("Content-Type", "text/plain; charset=utf-8")
	case rep.unsigned:
		h.Set("Content-Type", "application/json; charset=utf-8")
	default:
		// Wall clock on purpose: the SDK rejects signatures 5 min off time.Now.
		signed, err := s.keys.signedHeader(s.currentSignMode(), rep.body, time.Now())
		if err != nil {
			s.log.Error("wxpaysim: sign response", "err", err)
			rep = errReply(http.StatusInternalServerError, "SYSTEM_ERROR", "sign response")
		}
		for k, v := range signed {
			h[k] = v
		}
		h.Set("Content-Type", "application/json; charset=utf-8")
	}
	h.Set("Content-Length", strconv.Itoa(len(rep.body)))
	w.WriteHeader(rep.status)
	_, _ = w.Write(rep.body)
}

// authenticate verifies the merchant's Authorization header over
// "METHOD\nURI\nts\nnonce\nbody\n"; on failure it returns a 401 SIGN_ERROR,
// unsigned: WeChat Pay signs its answer only to a request whose signature
// it verified.
func (s *Sim) authenticate(r *http.Request, body []byte) (reply, bool) {
	if err := s.verifyMerchant(r, body); err != nil {
		rep := errReply(http.StatusUnauthorized, "SIGN_ERROR", "签名错误: "+err.Error())
		rep.unsigned = true
		return rep, false
	}
	return reply{}, true
}

func (s *Sim) verifyMerchant(r *http.Request, body []byte) error {
	p, err := parseAuthorization(r.Header.Get("Authorization"))
	if err != nil {
		return err
	}
	if p["mchid"] != s.keys.MchID {
		return fmt.Errorf("mchid %q does not match the signing key", p["mchid"])
	}
	if p["serial_no"] != s.keys.MerchantSerial {
		return fmt.Errorf("unknown merchant certificate serial %q", p["serial_no"])
	}
	ts, err := strconv.ParseInt(p["timestamp"], 10, 64)
	if err != nil || math.Abs(float64(time.Now().Unix()-ts)) > maxSkew.Seconds() {
		return errors.New("timestamp missing or expired")
	}
	sig, err := base64.StdEncoding.DecodeString(p["signature"])
	if err != nil {
		return errors.New("signature is not base64")
	}
	uri := r.RequestURI
	if uri == "" {
		uri = r.URL.RequestURI()
	}
	msg := r.Method + "\n" + uri + "\n" + p["timestamp"] + "\n" + p["nonce_str"] + "\n" + string(body) + "\n"
	digest := sha256.Sum256([]byte(msg))
	if err := rsa.VerifyPKCS1v15(&s.keys.MerchantKey.PublicKey, crypto.SHA256, digest[:], sig); err != nil {
		return errors.New("signature does not verify")
	}
	return nil
}

// parseAuthorization parses `WECHATPAY2-SHA256-RSA2048 k="v",k="v"`.
func parseAuthorization(h string) (map[string]string, error) {
	scheme, rest, ok := strings.Cut(h, " ")
	if !ok || scheme != signatureType {
		return nil, errors.New("authorization header missing or not " + signatureType)
	}
	params := map[string]string{}
	for part := range strings.SplitSeq(rest, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return nil, fmt.Errorf("malformed authorization parameter %q", part)
		}
		params[k] = strings.Trim(v, `"`)
	}
	for _, k := range []string{"mchid", "nonce_str", "signature", "timestamp", "serial_no"} {
		if params[k] == "" {
			return nil, fmt.Errorf("authorization parameter %s missing", k)
		}
	}
	return params, nil
}

func (s *Sim) handleUnknown(r *http.Request, _ []byte) reply {
	return errReply(http.StatusNotFound, "NOT_FOUND", "no such API: "+r.Method+" "+r.URL.Path)
}
