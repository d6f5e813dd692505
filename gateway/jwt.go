package gateway

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/golang-jwt/jwt/v5"
)

// JWTConfig says how user tokens issued by the business backend are
// checked: HS256 with a shared secret or ES256 with the backend's public
// key (exactly one). Tokens must carry exp.
type JWTConfig struct {
	HS256Secret    []byte
	ES256PublicKey *ecdsa.PublicKey
	Issuer         string        // required iss when set
	Audience       string        // required aud when set
	OpenIDClaim    string        // claim holding the user's openid; default "openid"
	Leeway         time.Duration // clock skew allowed on exp/nbf/iat
	// MaxLifetime, when set, requires iat and refuses a token whose exp
	// is more than this after it: a leaked token made to last for years
	// must not ask for refunds for years.
	MaxLifetime time.Duration
}

// JWTAuth checks `Authorization: Bearer <jwt>` on user routes.
type JWTAuth struct {
	cfg    JWTConfig
	parser *jwt.Parser
	key    any
}

// NewJWTAuth validates cfg and builds the checker.
func NewJWTAuth(cfg JWTConfig) (*JWTAuth, error) {
	if cfg.OpenIDClaim == "" {
		cfg.OpenIDClaim = "openid"
	}
	var method string
	var key any
	switch {
	case len(cfg.HS256Secret) > 0 && cfg.ES256PublicKey != nil:
		return nil, errors.New("jwt: set an HS256 secret or an ES256 public key, not both")
	case len(cfg.HS256Secret) > 0:
		if len(cfg.HS256Secret) < 32 {
			return nil, errors.New("jwt: HS256 secret must be at least 32 bytes")
		}
		// A key in PEM (the backend's public key in the secret's place)
		// would let anyone holding that public key sign tokens with it.
		if bytes.Contains(cfg.HS256Secret, []byte("-----BEGIN ")) {
			return nil, errors.New("jwt: the HS256 secret is a PEM key: anyone with a public key can sign with it; " +
				"an ES256 public key goes in es256_public_key_file, an HS256 secret is a random shared string")
		}
		method, key = jwt.SigningMethodHS256.Alg(), cfg.HS256Secret
	case cfg.ES256PublicKey != nil && cfg.ES256PublicKey.Curve != elliptic.P256():
		return nil, errors.New("jwt: the ES256 public key must be on P-256 (another curve is a weaker key, or refuses every token)")
	case cfg.ES256PublicKey != nil:
		method, key = jwt.SigningMethodES256.Alg(), cfg.ES256PublicKey
	default:
		return nil, errors.New("jwt: an HS256 secret or an ES256 public key is required")
	}
	opts := []jwt.ParserOption{jwt.WithValidMethods([]string{method}), jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(), jwt.WithLeeway(cfg.Leeway)}
	if cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.Issuer))
	}
	if cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(cfg.Audience))
	}
	return &JWTAuth{cfg: cfg, parser: jwt.NewParser(opts...), key: key}, nil
}

// OpenID checks a raw token and returns the openid it carries.
func (a *JWTAuth) OpenID(raw string) (string, error) {
	claims := jwt.MapClaims{}
	_, err := a.parser.ParseWithClaims(raw, claims, func(*jwt.Token) (any, error) { return a.key, nil })
	if err != nil {
		return "", fmt.Errorf("jwt: %w", err)
	}
	if err := a.checkLifetime(claims); err != nil {
		return "", err
	}
	openid, _ := claims[a.cfg.OpenIDClaim].(string)
	if !ValidOpenID(openid) {
		return "", fmt.Errorf("jwt: claim %q missing or malformed", a.cfg.OpenIDClaim)
	}
	return openid, nil
}

func (a *JWTAuth) checkLifetime(claims jwt.MapClaims) error {
	if a.cfg.MaxLifetime <= 0 {
		return nil
	}
	iat, err := claims.GetIssuedAt()
	if err != nil || iat == nil {
		return errors.New("jwt: iat is required")
	}
	exp, _ := claims.GetExpirationTime() // required and checked by the parser
	if exp == nil || exp.Sub(iat.Time) > a.cfg.MaxLifetime {
		return fmt.Errorf("jwt: lifetime over %v", a.cfg.MaxLifetime)
	}
	return nil
}

const openIDKey = "gateway.openid"

// Require lets through callers with a valid bearer token (401 otherwise)
// and remembers their openid for CurrentOpenID.
func (a *JWTAuth) Require() gin.HandlerFunc {
	return func(c *gin.Context) {
		h := c.GetHeader("Authorization")
		const prefix = "Bearer "
		// The scheme is case-insensitive and may be followed by several
		// spaces (RFC 9110 11.1, RFC 6750 2.1), as for the API keys.
		raw := ""
		if len(h) > len(prefix) && strings.EqualFold(h[:len(prefix)], prefix) {
			raw = strings.TrimLeft(h[len(prefix):], " ")
		}
		if raw == "" {
			writeError(c, &Error{Code: CodeUnauthorized, Message: "missing bearer token"})
			return
		}
		openid, err := a.OpenID(raw)
		if err != nil {
			writeError(c, Errorf(CodeUnauthorized, "invalid or expired token", err))
			return
		}
		c.Set(openIDKey, openid)
		c.Next()
	}
}

// CurrentOpenID returns the openid Require let through.
func CurrentOpenID(c *gin.Context) string { return c.GetString(openIDKey) }

// SignDevToken signs an HS256 token for openid valid for ttl (dev and tests).
func SignDevToken(secret []byte, openid, issuer, audience string, ttl time.Duration) (string, error) {
	now := time.Now()
	claims := jwt.MapClaims{"openid": openid, "iat": now.Unix(), "exp": now.Add(ttl).Unix()}
	if issuer != "" {
		claims["iss"] = issuer
	}
	if audience != "" {
		claims["aud"] = audience
	}
	return jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(secret)
}
