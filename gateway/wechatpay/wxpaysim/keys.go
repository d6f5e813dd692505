package wxpaysim

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"fmt"
	"math/big"
	"strings"
	"sync"
	"time"

	"github.com/wechatpay-apiv3/wechatpay-go/utils"
)

// keyBits is the RSA size WeChat Pay uses for every key involved.
const keyBits = 2048

// certCount is how many platform certificates GenerateKeys creates, so tests
// can exercise certificate rotation.
const certCount = 2

// Cert is a WeChat Pay platform certificate (certificate mode) with its
// private key, which the simulator needs to sign.
type Cert struct {
	// Serial is utils.GetCertificateSerialNumber(Cert): %X of the serial bytes.
	Serial string
	Key    *rsa.PrivateKey
	Cert   *x509.Certificate
}

// Keys is the full key material shared by a merchant and the simulated
// WeChat Pay platform.
type Keys struct {
	MchID, AppID string
	// APIv3Key is the 32-character AES-256-GCM key for notification resources.
	APIv3Key string
	// PublicKeyID identifies PlatformKey in public-key mode ("PUB_KEY_ID_…").
	PublicKeyID string
	// PlatformKey signs responses and public-key-mode notifications.
	PlatformKey *rsa.PrivateKey
	// Certs are the platform certificates (certificate mode), oldest first.
	Certs []Cert
	// MerchantKey is the merchant API private key the gateway signs requests with.
	MerchantKey *rsa.PrivateKey
	// MerchantSerial is the merchant API certificate serial (hex).
	MerchantSerial string
}

// GenerateKeys creates fresh keys: a platform key, certCount self-signed
// platform certificates and a merchant key, all 2048-bit RSA, generated in
// parallel to keep per-test setup short.
func GenerateKeys(mchID, appID string) (*Keys, error) {
	rsaKeys, err := generateRSAKeys(2 + certCount)
	if err != nil {
		return nil, err
	}
	k := &Keys{
		MchID:       mchID,
		AppID:       appID,
		PlatformKey: rsaKeys[0],
		MerchantKey: rsaKeys[1],
	}
	if k.APIv3Key, err = randomString(32); err != nil {
		return nil, err
	}
	if k.PublicKeyID, err = randomDigits(22); err != nil {
		return nil, err
	}
	k.PublicKeyID = "PUB_KEY_ID_" + k.PublicKeyID
	if k.MerchantSerial, err = randomHex(20); err != nil {
		return nil, err
	}
	now := time.Now().UTC()
	for i, key := range rsaKeys[2:] {
		from := now.Add(time.Duration(i-certCount) * 24 * time.Hour)
		c, err := selfSignedCert(key, from, from.AddDate(5, 0, 0))
		if err != nil {
			return nil, fmt.Errorf("platform cert %d: %w", i, err)
		}
		k.Certs = append(k.Certs, c)
	}
	return k, nil
}

// PublicKey returns the WeChat Pay public key (public-key mode).
func (k *Keys) PublicKey() *rsa.PublicKey { return &k.PlatformKey.PublicKey }

// Certificates returns the platform certificates, for a certificate verifier.
func (k *Keys) Certificates() []*x509.Certificate {
	out := make([]*x509.Certificate, len(k.Certs))
	for i, c := range k.Certs {
		out[i] = c.Cert
	}
	return out
}

func generateRSAKeys(n int) ([]*rsa.PrivateKey, error) {
	keys := make([]*rsa.PrivateKey, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range keys {
		wg.Go(func() { keys[i], errs[i] = rsa.GenerateKey(rand.Reader, keyBits) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, fmt.Errorf("generate rsa key: %w", err)
		}
	}
	return keys, nil
}

// IssueCert issues a platform certificate with a key of its own, valid
// from notBefore to notAfter (tests of rotation and expiry).
func IssueCert(notBefore, notAfter time.Time) (Cert, error) {
	key, err := rsa.GenerateKey(rand.Reader, keyBits)
	if err != nil {
		return Cert{}, fmt.Errorf("generate rsa key: %w", err)
	}
	return selfSignedCert(key, notBefore, notAfter)
}

// selfSignedCert issues a self-signed certificate like WeChat's platform
// certificates (which are issued by Tenpay's CA, for 5 years).
func selfSignedCert(key *rsa.PrivateKey, notBefore, notAfter time.Time) (Cert, error) {
	serialBytes := make([]byte, 20)
	if _, err := rand.Read(serialBytes); err != nil {
		return Cert{}, fmt.Errorf("serial: %w", err)
	}
	serialBytes[0] |= 0x40 // positive, no leading zero byte
	serialBytes[0] &= 0x7f
	tmpl := &x509.Certificate{
		SerialNumber: new(big.Int).SetBytes(serialBytes),
		Subject: pkix.Name{
			CommonName:   "Tenpay.com Root CA (wxpaysim)",
			Organization: []string{"Tenpay.com"},
		},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return Cert{}, fmt.Errorf("create certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return Cert{}, fmt.Errorf("parse certificate: %w", err)
	}
	return Cert{Serial: utils.GetCertificateSerialNumber(*cert), Key: key, Cert: cert}, nil
}

const alphanumeric = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

// randomString returns n random alphanumeric characters.
func randomString(n int) (string, error) {
	return randomFrom(alphanumeric, n)
}

// randomDigits returns n random decimal digits.
func randomDigits(n int) (string, error) {
	return randomFrom("0123456789", n)
}

func randomFrom(alphabet string, n int) (string, error) {
	buf := make([]byte, n)
	if _, err := rand.Read(buf); err != nil {
		return "", fmt.Errorf("random: %w", err)
	}
	var b strings.Builder
	for _, c := range buf {
		b.WriteByte(alphabet[int(c)%len(alphabet)])
	}
	return b.String(), nil
}

// randomHex returns n random bytes as upper-case hex, like certificate serials.
func randomHex(n int) (string, error) {
	buf := make([]byte, n)
	if _, err := rand.Read(buf); err != nil {
		return "", fmt.Errorf("random: %w", err)
	}
	return strings.ToUpper(hex.EncodeToString(buf)), nil
}
