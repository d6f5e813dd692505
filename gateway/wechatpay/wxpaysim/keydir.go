package wxpaysim

import (
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// File names inside a keys directory.
const (
	keysJSONFile           = "keys.json"
	platformPublicKeyFile  = "platform_public_key.pem"
	platformPrivateKeyFile = "platform_private_key.pem"
	merchantPrivateKeyFile = "merchant_private_key.pem"
)

// keysFile is the JSON index written next to the PEM files.
type keysFile struct {
	MchID          string   `json:"mchid"`
	AppID          string   `json:"appid"`
	APIv3Key       string   `json:"apiv3_key"`
	PublicKeyID    string   `json:"public_key_id"`
	MerchantSerial string   `json:"merchant_serial"`
	CertSerials    []string `json:"cert_serials"`
}

func certFile(serial string) string    { return "platform_cert_" + serial + ".pem" }
func certKeyFile(serial string) string { return "platform_cert_" + serial + ".key.pem" }

// WriteDir writes the keys as PEM files (mode 0600) plus keys.json:
// platform_public_key.pem (PKIX), platform_private_key.pem (PKCS8),
// platform_cert_<serial>.pem and .key.pem per certificate, and
// merchant_private_key.pem (PKCS8). These are dev/test keys only.
func (k *Keys) WriteDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("write keys %s: %w", dir, err)
	}
	files, err := k.pemFiles()
	if err != nil {
		return fmt.Errorf("write keys %s: %w", dir, err)
	}
	index, err := json.MarshalIndent(k.index(), "", "  ")
	if err != nil {
		return fmt.Errorf("write keys %s: %w", dir, err)
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			return fmt.Errorf("write keys %s: %w", dir, err)
		}
	}
	// keys.json goes last: its presence means the directory is complete.
	if err := os.WriteFile(filepath.Join(dir, keysJSONFile), append(index, '\n'), 0o600); err != nil {
		return fmt.Errorf("write keys %s: %w", dir, err)
	}
	return nil
}

func (k *Keys) index() keysFile {
	f := keysFile{
		MchID: k.MchID, AppID: k.AppID, APIv3Key: k.APIv3Key,
		PublicKeyID: k.PublicKeyID, MerchantSerial: k.MerchantSerial,
	}
	for _, c := range k.Certs {
		f.CertSerials = append(f.CertSerials, c.Serial)
	}
	return f
}

func (k *Keys) pemFiles() (map[string][]byte, error) {
	files := map[string][]byte{}
	pub, err := x509.MarshalPKIXPublicKey(&k.PlatformKey.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("marshal platform public key: %w", err)
	}
	files[platformPublicKeyFile] = pemBlock("PUBLIC KEY", pub)
	if files[platformPrivateKeyFile], err = privateKeyPEM(k.PlatformKey); err != nil {
		return nil, err
	}
	if files[merchantPrivateKeyFile], err = privateKeyPEM(k.MerchantKey); err != nil {
		return nil, err
	}
	for _, c := range k.Certs {
		files[certFile(c.Serial)] = pemBlock("CERTIFICATE", c.Cert.Raw)
		if files[certKeyFile(c.Serial)], err = privateKeyPEM(c.Key); err != nil {
			return nil, err
		}
	}
	return files, nil
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func privateKeyPEM(key *rsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("marshal private key: %w", err)
	}
	return pemBlock("PRIVATE KEY", der), nil
}

// LoadKeys reads keys written by WriteDir.
func LoadKeys(dir string) (*Keys, error) {
	raw, err := os.ReadFile(filepath.Join(dir, keysJSONFile))
	if err != nil {
		return nil, fmt.Errorf("load keys %s: %w", dir, err)
	}
	var f keysFile
	if err := json.Unmarshal(raw, &f); err != nil {
		return nil, fmt.Errorf("load keys %s: parse %s: %w", dir, keysJSONFile, err)
	}
	k := &Keys{
		MchID: f.MchID, AppID: f.AppID, APIv3Key: f.APIv3Key,
		PublicKeyID: f.PublicKeyID, MerchantSerial: f.MerchantSerial,
	}
	if err := k.loadPEMs(dir, f.CertSerials); err != nil {
		return nil, fmt.Errorf("load keys %s: %w", dir, err)
	}
	return k, nil
}

func (k *Keys) loadPEMs(dir string, serials []string) error {
	var err error
	if k.PlatformKey, err = readPrivateKey(filepath.Join(dir, platformPrivateKeyFile)); err != nil {
		return err
	}
	if k.MerchantKey, err = readPrivateKey(filepath.Join(dir, merchantPrivateKeyFile)); err != nil {
		return err
	}
	for _, serial := range serials {
		c := Cert{Serial: serial}
		if c.Cert, err = readCert(filepath.Join(dir, certFile(serial))); err != nil {
			return err
		}
		if c.Key, err = readPrivateKey(filepath.Join(dir, certKeyFile(serial))); err != nil {
			return err
		}
		k.Certs = append(k.Certs, c)
	}
	return nil
}

func readPEM(path, typ string) ([]byte, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(raw)
	if block == nil || block.Type != typ {
		return nil, fmt.Errorf("%s: no %q PEM block", path, typ)
	}
	return block.Bytes, nil
}

func readPrivateKey(path string) (*rsa.PrivateKey, error) {
	der, err := readPEM(path, "PRIVATE KEY")
	if err != nil {
		return nil, err
	}
	key, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	rsaKey, ok := key.(*rsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%s: not an RSA key", path)
	}
	return rsaKey, nil
}

func readCert(path string) (*x509.Certificate, error) {
	der, err := readPEM(path, "CERTIFICATE")
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return cert, nil
}

// LoadOrGenerateKeys loads the keys in dir, or generates and writes new ones
// when dir holds no keys.json yet. mchID and appID are used only when
// generating.
func LoadOrGenerateKeys(dir, mchID, appID string) (*Keys, error) {
	_, err := os.Stat(filepath.Join(dir, keysJSONFile))
	if err == nil {
		return LoadKeys(dir)
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("load keys %s: %w", dir, err)
	}
	k, err := GenerateKeys(mchID, appID)
	if err != nil {
		return nil, err
	}
	if err := k.WriteDir(dir); err != nil {
		return nil, err
	}
	return k, nil
}
