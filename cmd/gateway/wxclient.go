package main

import (
	"context"
	"fmt"

	"github.com/wechatpay-apiv3/wechatpay-go/utils"

	"paygateway/gateway/wechatpay"
)

// newWechatClient builds the outbound WeChat Pay client (order queries),
// or returns nil when the merchant key is not configured.
func newWechatClient(ctx context.Context, w WechatPayConfig) (*wechatpay.Client, error) {
	if w.MerchantPrivateKeyFile == "" || w.MerchantSerial == "" || w.PublicKeyFile == "" {
		return nil, nil
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
		MerchantSerial: w.MerchantSerial, MerchantKey: key, PublicKeyID: w.PublicKeyID, PublicKey: pub,
		BaseURL: w.BaseURL, Timeout: w.Timeout, RefundNotifyURL: w.RefundNotifyURL})
}
