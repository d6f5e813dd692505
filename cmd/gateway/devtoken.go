package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"paygateway/gateway"
)

// devJWTSecretFile holds the HS256 secret `gateway dev` checks user tokens
// with and `gateway devtoken` signs them with (local development only).
var devJWTSecretFile = filepath.Join(devDir, "dev-jwt-secret.txt")

// devJWTSecret makes the dev secret on first start and returns its path.
func devJWTSecret() (string, error) {
	_, err := os.Stat(devJWTSecretFile)
	if err == nil {
		return devJWTSecretFile, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("read %s: %w", devJWTSecretFile, err)
	}
	if err := os.MkdirAll(devDir, 0o700); err != nil {
		return "", err
	}
	secret := gateway.NewToken() + gateway.NewToken()
	if err := os.WriteFile(devJWTSecretFile, []byte(secret+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("write %s: %w", devJWTSecretFile, err)
	}
	return devJWTSecretFile, nil
}

// devAudience is the aud claim the dev stack asks of user tokens.
const devAudience = "paygateway-dev"

// devToken prints a user JWT signed with the dev secret:
//
//	gateway devtoken --openid o-demo [--ttl 1h]
func devToken(args []string) error {
	fs := flag.NewFlagSet("devtoken", flag.ContinueOnError)
	openid := fs.String("openid", "", "the user's openid (required)")
	ttl := fs.Duration("ttl", time.Hour, "token lifetime")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *openid == "" {
		return errors.New("devtoken: --openid is required")
	}
	path, err := devJWTSecret()
	if err != nil {
		return err
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	tok, err := gateway.SignDevToken([]byte(strings.TrimSpace(string(b))), *openid, "", devAudience, *ttl)
	if err != nil {
		return err
	}
	fmt.Println(tok)
	return nil
}
