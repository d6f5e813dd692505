// Package wechatpay adapts wechatpay-go to the gateway: it verifies and
// decrypts notifications (Verifier, a gateway.Notices) and calls the v3
// API (Client).
package wechatpay

import (
	"bytes"
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/wechatpay-apiv3/wechatpay-go/core"
	"github.com/wechatpay-apiv3/wechatpay-go/core/auth"
	"github.com/wechatpay-apiv3/wechatpay-go/core/auth/validators"
	"github.com/wechatpay-apiv3/wechatpay-go/core/auth/verifiers"
	"github.com/wechatpay-apiv3/wechatpay-go/utils"

	"paygateway/gateway"
)

var _ gateway.Notices = (*Verifier)(nil)

// NotifyConfig holds the keys notifications are checked with. Set the
// WeChat Pay public key, platform certificates, or both (during a switch
// WeChat signs with either; the serial header says which).
type NotifyConfig struct {
	APIv3Key     string
	PublicKeyID  string
	PublicKey    *rsa.PublicKey
	Certificates []*x509.Certificate
	MaxSkew      time.Duration // default 5 min, as the SDK
	Now          func() time.Time

	// PreviousAPIv3Key, if set, opens what APIv3Key cannot: the other key
	// of a rotation under way (WeChat Pay encrypts with the one set in the
	// merchant platform; a notification made before the switch may be
	// redelivered under the old one).
	PreviousAPIv3Key string
}

// Verifier checks notifications with wechatpay-go's validator and
// verifiers, and decrypts them with its AES-GCM helper.
type Verifier struct {
	cfg   NotifyConfig
	known map[string]bool
	// certs are the platform certificates by serial: a notification
	// naming one is refused outside its validity period (WeChat Pay
	// retires a certificate's key with it). The public key has none.
	certs     map[string]*x509.Certificate
	validator *validators.WechatPayNotifyValidator
}

// NewVerifier builds a Verifier; it fails on missing or malformed keys.
func NewVerifier(cfg NotifyConfig) (*Verifier, error) {
	if len(cfg.APIv3Key) != 32 {
		return nil, fmt.Errorf("wechatpay notify: APIv3 key must be 32 bytes, got %d", len(cfg.APIv3Key))
	}
	if p := cfg.PreviousAPIv3Key; p != "" && (len(p) != 32 || p == cfg.APIv3Key) {
		return nil, fmt.Errorf("wechatpay notify: the previous APIv3 key must be 32 bytes and differ from the current one")
	}
	if cfg.MaxSkew <= 0 {
		cfg.MaxSkew = 5 * time.Minute
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	for _, c := range cfg.Certificates {
		if !rsaCertificate(c) { // the SDK's verifier would panic on a notification naming it
			return nil, errors.New("wechatpay notify: platform certificates must be RSA certificates")
		}
	}
	v, known, err := buildVerifier(cfg)
	if err != nil {
		return nil, err
	}
	return &Verifier{cfg: cfg, known: known, certs: certsBySerial(cfg.Certificates),
		validator: validators.NewWechatPayNotifyValidator(v)}, nil
}

// certsBySerial indexes platform certificates by serial.
func certsBySerial(cs []*x509.Certificate) map[string]*x509.Certificate {
	certs := make(map[string]*x509.Certificate, len(cs))
	for _, c := range cs {
		certs[utils.GetCertificateSerialNumber(*c)] = c
	}
	return certs
}

// CertificateExpired reports whether c is past its NotAfter at now: its
// key is retired and verifies nothing any more.
func CertificateExpired(c *x509.Certificate, now time.Time) bool { return now.After(c.NotAfter) }

// certificateInForce reports whether now is within c's validity period
// (both ends inclusive, as RFC 5280 and crypto/x509 have it).
func certificateInForce(c *x509.Certificate, now time.Time) bool {
	return !now.Before(c.NotBefore) && !CertificateExpired(c, now)
}

// certOutOfForce refuses a signature under serial when it names one of
// certs outside its validity period at now: WeChat Pay retires a
// certificate's key with it. Nil otherwise (a live certificate, the
// public key, or an unknown serial, which the verifier refuses).
func certOutOfForce(certs map[string]*x509.Certificate, serial string, now time.Time) error {
	c := certs[serial]
	if c == nil || certificateInForce(c, now) {
		return nil
	}
	return fmt.Errorf("Wechatpay-Serial %s names a platform certificate outside its validity period (%s to %s)",
		serial, c.NotBefore.UTC().Format(time.RFC3339), c.NotAfter.UTC().Format(time.RFC3339))
}

func buildVerifier(cfg NotifyConfig) (auth.Verifier, map[string]bool, error) {
	known := map[string]bool{}
	for serial := range certsBySerial(cfg.Certificates) {
		known[serial] = true
	}
	if cfg.PublicKey != nil && cfg.PublicKeyID != "" {
		known[cfg.PublicKeyID] = true
	}
	v := keyVerifier(cfg.PublicKeyID, cfg.PublicKey, cfg.Certificates)
	if v == nil {
		return nil, nil, fmt.Errorf("wechatpay notify: configure the WeChat Pay public key or platform certificates")
	}
	return v, known, nil
}

// keyVerifier verifies WeChat Pay's signatures with the public key, the
// platform certificates, or both (during a switch WeChat Pay signs with
// either; the serial picks the key). Nil when neither is set.
func keyVerifier(keyID string, key *rsa.PublicKey, certs []*x509.Certificate) auth.Verifier {
	hasKey := key != nil && keyID != ""
	switch {
	case hasKey && len(certs) > 0:
		return verifiers.NewSHA256WithRSACombinedVerifier(core.NewCertificateMapWithList(certs), keyID, *key)
	case hasKey:
		return verifiers.NewSHA256WithRSAPubkeyVerifier(keyID, *key)
	case len(certs) > 0:
		return verifiers.NewSHA256WithRSAVerifier(core.NewCertificateMapWithList(certs))
	}
	return nil
}

type envelope struct {
	ID           string `json:"id"`
	CreateTime   string `json:"create_time"`
	EventType    string `json:"event_type"`
	ResourceType string `json:"resource_type"`
	Summary      string `json:"summary"`
	Resource     struct {
		Algorithm      string `json:"algorithm"`
		Ciphertext     string `json:"ciphertext"`
		AssociatedData string `json:"associated_data"`
		Nonce          string `json:"nonce"`
		OriginalType   string `json:"original_type"`
	} `json:"resource"`
}

// Parse verifies a notification and decrypts it (Verify, then Decrypt).
func (v *Verifier) Parse(ctx context.Context, header http.Header, body []byte) (*gateway.Notice, error) {
	n, err := v.Verify(ctx, header, body)
	if err != nil {
		return nil, err
	}
	if err := v.Decrypt(n); err != nil {
		return nil, err
	}
	return n, nil
}

// Verify checks headers, time window and signature and reads the envelope.
func (v *Verifier) Verify(ctx context.Context, header http.Header, body []byte) (*gateway.Notice, error) {
	ts, err := v.checkHeaders(header)
	if err != nil {
		return nil, err
	}
	req := &http.Request{Header: header, Body: io.NopCloser(bytes.NewReader(body))}
	if err := v.validator.Validate(ctx, req); err != nil {
		return nil, gateway.Errorf(gateway.CodeSignature, "signature verification failed", err)
	}
	var env envelope
	if err := json.Unmarshal(body, &env); err != nil {
		return nil, gateway.Errorf(gateway.CodeInvalid, "body is not a notification", err)
	}
	if env.ID == "" || len(env.ID) > 128 || env.EventType == "" {
		return nil, &gateway.Error{Code: gateway.CodeInvalid, Message: "notification lacks id or event_type"}
	}
	created, _ := time.Parse(time.RFC3339, env.CreateTime)
	r := env.Resource
	return &gateway.Notice{ID: env.ID, EventType: env.EventType, ResourceType: env.ResourceType,
		OriginalType: r.OriginalType, Summary: env.Summary, CreateTime: created.UTC(),
		Serial: strings.TrimSpace(header.Get("Wechatpay-Serial")), Nonce: nonce(header), Timestamp: ts,
		Resource: gateway.Sealed{Algorithm: r.Algorithm, Ciphertext: r.Ciphertext,
			AssociatedData: r.AssociatedData, Nonce: r.Nonce}}, nil
}

// checkHeaders gives precise errors before the SDK's own checks run.
func (v *Verifier) checkHeaders(h http.Header) (time.Time, error) {
	for _, k := range []string{"Wechatpay-Serial", "Wechatpay-Signature", "Wechatpay-Timestamp", "Wechatpay-Nonce"} {
		if strings.TrimSpace(h.Get(k)) == "" {
			return time.Time{}, &gateway.Error{Code: gateway.CodeSignature, Message: "missing header " + k}
		}
	}
	if st := h.Get("Wechatpay-Signature-Type"); st != "" && st != "WECHATPAY2-SHA256-RSA2048" {
		return time.Time{}, &gateway.Error{Code: gateway.CodeSignature, Message: "unsupported signature type"}
	}
	sec, err := strconv.ParseInt(strings.TrimSpace(h.Get("Wechatpay-Timestamp")), 10, 64)
	if err != nil {
		return time.Time{}, &gateway.Error{Code: gateway.CodeSignature, Message: "malformed Wechatpay-Timestamp"}
	}
	if n := nonce(h); len(n) > 64 || strings.IndexFunc(n, func(r rune) bool { return r <= ' ' || r > '~' }) >= 0 {
		return time.Time{}, &gateway.Error{Code: gateway.CodeSignature, Message: "malformed Wechatpay-Nonce"}
	}
	ts := time.Unix(sec, 0).UTC()
	// In seconds, without a difference that can overflow: a time.Duration
	// saturates ~292 years out, and a timestamp that far ahead passed a
	// check on one.
	now, skew := v.cfg.Now().Unix(), int64(v.cfg.MaxSkew/time.Second)
	if sec <= now-skew || sec >= now+skew {
		return time.Time{}, &gateway.Error{Code: gateway.CodeStale, Message: "timestamp outside the 5 minute window"}
	}
	serial := strings.TrimSpace(h.Get("Wechatpay-Serial"))
	if !v.known[serial] {
		return time.Time{}, &gateway.Error{Code: gateway.CodeSignature, Message: "unknown Wechatpay-Serial " + truncate(serial, 64)}
	}
	// Checked now, not at start: a certificate may expire while the
	// process runs, and its file is kept after rotation.
	if err := certOutOfForce(v.certs, serial, v.cfg.Now()); err != nil {
		return time.Time{}, &gateway.Error{Code: gateway.CodeSignature, Message: err.Error()}
	}
	return ts, nil
}

// nonce is the nonce as the SDK signs it: trimmed of (Unicode) space. The
// replay check must key on that value, or a captured request with a
// trailing U+00A0 passes it with a valid signature.
func nonce(h http.Header) string { return strings.TrimSpace(h.Get("Wechatpay-Nonce")) }

// gcmNonceSize is AEAD_AES_256_GCM's nonce length: WeChat Pay's resource
// nonce is 12 characters.
const gcmNonceSize = 12

// Decrypt opens n.Resource with the APIv3 key into n.Plaintext, or with
// the previous key (setting n.PreviousKey) when one is configured and the
// current key cannot: GCM's tag fails cleanly under a wrong key.
func (v *Verifier) Decrypt(n *gateway.Notice) error {
	r := n.Resource
	if r.Algorithm != "AEAD_AES_256_GCM" {
		return &gateway.Error{Code: gateway.CodeInvalid, Message: "unsupported resource algorithm " + truncate(r.Algorithm, 32)}
	}
	if len(r.Nonce) != gcmNonceSize { // the SDK hands any length to GCM, which panics on it
		return &gateway.Error{Code: gateway.CodeDecrypt, Message: fmt.Sprintf("resource nonce must be %d bytes", gcmNonceSize)}
	}
	plain, err := utils.DecryptAES256GCM(v.cfg.APIv3Key, r.AssociatedData, r.Nonce, r.Ciphertext)
	if err != nil && v.cfg.PreviousAPIv3Key != "" {
		// Neither opening: the current key's error is the one to report.
		if p, perr := utils.DecryptAES256GCM(v.cfg.PreviousAPIv3Key, r.AssociatedData, r.Nonce, r.Ciphertext); perr == nil {
			plain, err, n.PreviousKey = p, nil, true
		}
	}
	if err != nil {
		return gateway.Errorf(gateway.CodeDecrypt, "resource could not be decrypted", err)
	}
	n.Plaintext = []byte(plain)
	return nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
