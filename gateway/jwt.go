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
// key (exactly one), and during a rotation also the key it signed with
// before (at most one, of either kind). Tokens must carry exp.
type JWTConfig struct {
	HS256Secret    []byte
	ES256PublicKey *ecdsa.PublicKey
	// PreviousHS256Secret or PreviousES256PublicKey: the backend's key
	// before its rotation, taken beside the current one until the tokens
	// it signed have expired, so that no user is refused while the
	// backend and the gateway's instances switch one by one.
	PreviousHS256Secret    []byte
	PreviousES256PublicKey *ecdsa.PublicKey
	Issuer                 string        // required iss when set
	Audience               string        // required aud when set
	OpenIDClaim            string        // claim holding the user's openid; default "openid"
	Leeway                 time.Duration // clock skew allowed on exp/nbf/iat
	// MaxLifetime, when set, requires iat and refuses a token whose exp
	// is more than this after it: a leaked token made to last for years
	// must not ask for refunds for years.
	MaxLifetime time.Duration
}

// JWTAuth checks `Authorization: Bearer <jwt>` on user routes.
type JWTAuth struct {
	cfg      JWTConfig
	current  *jwtKey
	previous *jwtKey // nil: no previous key
}

// jwtKey checks tokens against one key. Its parser takes only that key's
// algorithm: an HS256 token is never checked against an EC public key
// (whose published PEM would then be an HMAC secret anyone has), nor an
// ES256 token against a secret.
type jwtKey struct {
	parser *jwt.Parser
	key    any
}

func (k *jwtKey) parse(raw string) (jwt.MapClaims, error) {
	claims := jwt.MapClaims{}
	_, err := k.parser.ParseWithClaims(raw, claims, func(*jwt.Token) (any, error) { return k.key, nil })
	return claims, err
}

// NewJWTAuth validates cfg and builds the checker.
func NewJWTAuth(cfg JWTConfig) (*JWTAuth, error) {
	if cfg.OpenIDClaim == "" {
		cfg.OpenIDClaim = "openid"
	}
	opts := []jwt.ParserOption{jwt.WithExpirationRequired(), jwt.WithIssuedAt(), jwt.WithLeeway(cfg.Leeway)}
	if cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.Issuer))
	}
	if cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(cfg.Audience))
	}
	hasPrevious := len(cfg.PreviousHS256Secret) > 0 || cfg.PreviousES256PublicKey != nil
	if hasPrevious && len(cfg.HS256Secret) == 0 && cfg.ES256PublicKey == nil {
		return nil, errors.New("jwt: a previous key is set without a current one: the current key is the one the backend signs with now")
	}
	a := &JWTAuth{cfg: cfg}
	var err error
	if a.current, err = newJWTKey(cfg.HS256Secret, cfg.ES256PublicKey, "", opts); err != nil {
		return nil, err
	}
	if !hasPrevious {
		return a, nil
	}
	if a.previous, err = newJWTKey(cfg.PreviousHS256Secret, cfg.PreviousES256PublicKey, "previous_", opts); err != nil {
		return nil, err
	}
	if samePrevious(cfg) {
		return nil, errors.New("jwt: the previous key is the current one: previous_* is the key the backend signed with before the current one")
	}
	return a, nil
}

// samePrevious: cfg's previous key (exactly one) is its current key.
func samePrevious(cfg JWTConfig) bool {
	if len(cfg.PreviousHS256Secret) > 0 {
		return bytes.Equal(cfg.PreviousHS256Secret, cfg.HS256Secret)
	}
	return cfg.ES256PublicKey != nil && cfg.PreviousES256PublicKey.Equal(cfg.ES256PublicKey)
}

// newJWTKey checks one key (an HS256 secret or an ES256 public key) and
// builds its parser; prefix names its settings in errors ("" or
// "previous_").
func newJWTKey(secret []byte, pub *ecdsa.PublicKey, prefix string, opts []jwt.ParserOption) (*jwtKey, error) {
	name := strings.ReplaceAll(prefix, "_", " ")
	var method string
	var key any
	switch {
	case len(secret) > 0 && pub != nil:
		return nil, fmt.Errorf("jwt: set a %sHS256 secret or a %sES256 public key, not both", name, name)
	case len(secret) > 0:
		if len(secret) < 32 {
			return nil, fmt.Errorf("jwt: %sHS256 secret must be at least 32 bytes", name)
		}
		// A key in PEM (the backend's public key in the secret's place)
		// would let anyone holding that public key sign tokens with it.
		if bytes.Contains(secret, []byte("-----BEGIN ")) {
			return nil, fmt.Errorf("jwt: the %sHS256 secret is a PEM key: anyone with a public key can sign with it; "+
				"an ES256 public key goes in %ses256_public_key_file, an HS256 secret is a random shared string", name, prefix)
		}
		method, key = jwt.SigningMethodHS256.Alg(), secret
	case pub != nil && pub.Curve != elliptic.P256():
		return nil, fmt.Errorf("jwt: the %sES256 public key must be on P-256 (another curve is a weaker key, or refuses every token)", name)
	case pub != nil:
		method, key = jwt.SigningMethodES256.Alg(), pub
	default:
		return nil, errors.New("jwt: an HS256 secret or an ES256 public key is required")
	}
	opts = append([]jwt.ParserOption{jwt.WithValidMethods([]string{method})}, opts...)
	return &jwtKey{parser: jwt.NewParser(opts...), key: key}, nil
}

// OpenID checks a raw token and returns the openid it carries.
func (a *JWTAuth) OpenID(raw string) (string, error) {
	openid, _, err := a.check(raw)
	return openid, err
}

// check is OpenID, and says whether the previous key took the token.
func (a *JWTAuth) check(raw string) (openid string, previous bool, err error) {
	claims, err := a.current.parse(raw)
	if a.previous != nil && errors.Is(err, jwt.ErrTokenSignatureInvalid) {
		// Not signed with the current key, or not with its algorithm: a
		// token the backend signed before it switched to the current key.
		claims, err = a.previous.parse(raw)
		previous = true
	}
	if err != nil {
		return "", false, fmt.Errorf("jwt: %w", err)
	}
	if err := a.checkLifetime(claims); err != nil {
		return "", false, err
	}
	openid, _ = claims[a.cfg.OpenIDClaim].(string)
	if !ValidOpenID(openid) {
		return "", false, fmt.Errorf("jwt: claim %q missing or malformed", a.cfg.OpenIDClaim)
	}
	return openid, previous, nil
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
// and remembers their openid for CurrentOpenID. m counts the tokens the
// previous key took.
func (a *JWTAuth) Require(m *Metrics) gin.HandlerFunc {
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
		openid, previous, err := a.check(raw)
		if err != nil {
			writeError(c, Errorf(CodeUnauthorized, "invalid or expired token", err))
			return
		}
		if previous {
			m.PreviousJWTKey()
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
