package wxpaysim

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/wechatpay-apiv3/wechatpay-go/utils"
)

// beijing is UTC+8, the zone of every time WeChat Pay writes.
var beijing = time.FixedZone("CST", 8*3600)

// signatureType is the only signature type WeChat Pay API v3 uses.
const signatureType = "WECHATPAY2-SHA256-RSA2048"

// Header names WeChat Pay sets on responses and notifications.
const (
	headerTimestamp     = "Wechatpay-Timestamp"
	headerNonce         = "Wechatpay-Nonce"
	headerSignature     = "Wechatpay-Signature"
	headerSerial        = "Wechatpay-Serial"
	headerSignatureType = "Wechatpay-Signature-Type"
	headerRequestID     = "Request-ID"
)

// SignMode selects the key WeChat Pay signs with. The zero value is
// public-key mode (Wechatpay-Serial = PublicKeyID); with UseCert the
// platform certificate Certs[CertIndex] signs (Wechatpay-Serial = its serial).
type SignMode struct {
	UseCert   bool `json:"use_cert"`
	CertIndex int  `json:"cert_index"`
}

// PublicKeyMode signs with the WeChat Pay public key (PublicKeyID).
func PublicKeyMode() SignMode { return SignMode{} }

// CertMode signs with platform certificate Certs[i].
func CertMode(i int) SignMode { return SignMode{UseCert: true, CertIndex: i} }

// signer returns the serial and private key for mode.
func (k *Keys) signer(mode SignMode) (string, *rsa.PrivateKey, error) {
	if !mode.UseCert {
		return k.PublicKeyID, k.PlatformKey, nil
	}
	if mode.CertIndex < 0 || mode.CertIndex >= len(k.Certs) {
		return "", nil, fmt.Errorf("sign mode: no platform certificate %d", mode.CertIndex)
	}
	c := k.Certs[mode.CertIndex]
	return c.Serial, c.Key, nil
}

// signedHeader signs "ts\nnonce\nbody\n" and returns the Wechatpay-* headers.
func (k *Keys) signedHeader(mode SignMode, body []byte, now time.Time) (http.Header, error) {
	serial, key, err := k.signer(mode)
	if err != nil {
		return nil, err
	}
	nonce, err := randomString(32)
	if err != nil {
		return nil, err
	}
	ts := strconv.FormatInt(now.Unix(), 10)
	sig, err := utils.SignSHA256WithRSA(ts+"\n"+nonce+"\n"+string(body)+"\n", key)
	if err != nil {
		return nil, fmt.Errorf("sign: %w", err)
	}
	h := http.Header{}
	h.Set(headerTimestamp, ts)
	h.Set(headerNonce, nonce)
	h.Set(headerSignature, sig)
	h.Set(headerSerial, serial)
	h.Set(headerSignatureType, signatureType)
	return h, nil
}

// Notification is a signed WeChat Pay notification, ready to POST.
type Notification struct {
	ID        string
	EventType string
	Body      []byte
	Header    http.Header
}

// notifyBody is the JSON envelope of a notification.
type notifyBody struct {
	ID           string         `json:"id"`
	CreateTime   string         `json:"create_time"`
	ResourceType string         `json:"resource_type"`
	EventType    string         `json:"event_type"`
	Summary      string         `json:"summary"`
	Resource     notifyResource `json:"resource"`
}

type notifyResource struct {
	OriginalType   string `json:"original_type"`
	Algorithm      string `json:"algorithm"`
	Ciphertext     string `json:"ciphertext"`
	AssociatedData string `json:"associated_data"`
	Nonce          string `json:"nonce"`
}

// summaries are the texts WeChat Pay puts in the summary field.
var summaries = map[string]string{
	"TRANSACTION.SUCCESS": "支付成功",
	"REFUND.SUCCESS":      "退款成功",
	"REFUND.ABNORMAL":     "退款异常",
	"REFUND.CLOSED":       "退款关闭",
}

// NewNotification encrypts plaintext with the APIv3 key (AEAD_AES_256_GCM,
// associated_data = originalType, 12-character nonce), wraps it in WeChat's
// envelope and signs it. An empty id gets a random UUID.
func (k *Keys) NewNotification(id, eventType, originalType string, plaintext []byte, mode SignMode, now time.Time) (Notification, error) {
	if id == "" {
		id = newUUID()
	}
	res, err := k.encryptResource(originalType, plaintext)
	if err != nil {
		return Notification{}, fmt.Errorf("notification %s: %w", id, err)
	}
	body, err := json.Marshal(notifyBody{
		ID:           id,
		CreateTime:   now.In(beijing).Format(time.RFC3339),
		ResourceType: "encrypt-resource",
		EventType:    eventType,
		Summary:      summaries[eventType],
		Resource:     res,
	})
	if err != nil {
		return Notification{}, fmt.Errorf("notification %s: %w", id, err)
	}
	n := Notification{ID: id, EventType: eventType, Body: body}
	return n.Resign(k, mode, now)
}

func (k *Keys) encryptResource(originalType string, plaintext []byte) (notifyResource, error) {
	block, err := aes.NewCipher([]byte(k.APIv3Key))
	if err != nil {
		return notifyResource{}, fmt.Errorf("apiv3 key: %w", err)
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return notifyResource{}, fmt.Errorf("apiv3 key: %w", err)
	}
	nonce, err := randomString(gcm.NonceSize())
	if err != nil {
		return notifyResource{}, err
	}
	ct := gcm.Seal(nil, []byte(nonce), plaintext, []byte(originalType))
	return notifyResource{
		OriginalType:   originalType,
		Algorithm:      "AEAD_AES_256_GCM",
		Ciphertext:     base64.StdEncoding.EncodeToString(ct),
		AssociatedData: originalType,
		Nonce:          nonce,
	}, nil
}

// Resign returns the same notification (same body, same id) with a fresh
// nonce, timestamp and signature: this is what a WeChat redelivery looks like.
func (n Notification) Resign(k *Keys, mode SignMode, now time.Time) (Notification, error) {
	h, err := k.signedHeader(mode, n.Body, now)
	if err != nil {
		return Notification{}, fmt.Errorf("sign notification %s: %w", n.ID, err)
	}
	h.Set("Content-Type", "application/json")
	n.Header = h
	return n, nil
}

// Post delivers the notification to url. The caller closes the response body.
func (n Notification) Post(ctx context.Context, client *http.Client, url string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(n.Body))
	if err != nil {
		return nil, fmt.Errorf("post notification %s: %w", n.ID, err)
	}
	req.Header = n.Header.Clone()
	req.Header.Set("User-Agent", "Mozilla/4.0")
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("post notification %s: %w", n.ID, err)
	}
	return resp, nil
}

// newUUID returns a random RFC 4122 version 4 UUID.
func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}
