package main

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/wechatpay-apiv3/wechatpay-go/utils"

	"paygateway/gateway/wechatpay"
)

// newWechatClient builds the outbound WeChat Pay client (order and refund
// queries, refunds, bills) shared by every feature, or returns nil when no
// merchant key is configured. It loads the platform certificates itself:
// for the admin commands (gateway reconcile), which build no verifier.
func newWechatClient(ctx context.Context, w WechatPayConfig) (*wechatpay.Client, error) {
	if w.MerchantPrivateKeyFile == "" {
		return nil, nil
	}
	certs, _, err := loadCerts(w.PlatformCertFiles, time.Now())
	if err != nil {
		return nil, err
	}
	return newWechatClientWith(ctx, w, certs)
}

// newWechatClientWith is newWechatClient with the platform certificates
// already loaded: the answers of WeChat Pay's API are verified with them
// and the public key, as notifications are.
func newWechatClientWith(ctx context.Context, w WechatPayConfig, certs []*x509.Certificate) (*wechatpay.Client, error) {
	if w.MerchantPrivateKeyFile == "" {
		return nil, nil
	}
	if w.MerchantSerial == "" {
		return nil, errors.New("config: wechatpay.merchant_serial (GATEWAY_WECHATPAY_MERCHANT_SERIAL) is required with a merchant key")
	}
	if w.PublicKeyFile == "" {
		return nil, errors.New("config: wechatpay.public_key_file (GATEWAY_WECHATPAY_PUBLIC_KEY_FILE) is required to verify WeChat Pay's answers")
	}
	// Checked here too, not only in Validate: the admin commands (gateway
	// reconcile) build a client without the server's whole validation.
	if !secureOrLocal(w.BaseURL) {
		return nil, errors.New("config: wechatpay.base_url (GATEWAY_WECHATPAY_BASE_URL) must be https:// (http:// only to this host, for a simulator)")
	}
	key, err := loadMerchantKey(w.MerchantPrivateKeyFile)
	if err != nil {
		return nil, err
	}
	pub, err := utils.LoadPublicKeyWithPath(w.PublicKeyFile)
	if err != nil {
		return nil, fmt.Errorf("config: wechatpay.public_key_file: %w", err)
	}
	return wechatpay.NewClient(ctx, wechatpay.ClientConfig{MchID: w.MchID, AppID: w.AppID,
		MerchantSerial: w.MerchantSerial, MerchantKey: key, PublicKeyID: w.PublicKeyID, PublicKey: pub, Certificates: certs,
		BaseURL: w.BaseURL, Timeout: w.Timeout, BillTimeout: w.billTimeout(), RefundNotifyURL: w.RefundNotifyURL})
}

// maxBillTimeout keeps a stuck bill download from holding the daily
// reconciliation (and its lease) for long.
const maxBillTimeout = 30 * time.Minute

// billTimeout is the bound of a trade bill download.
func (w WechatPayConfig) billTimeout() time.Duration {
	if w.BillTimeout > 0 {
		return w.BillTimeout
	}
	return wechatpay.DefaultBillTimeout
}
