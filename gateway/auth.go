package gateway

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
)

// Role is what an API key may do.
type Role string

// Roles: finance reads the ledger; ops also replays dead letters; service
// registers orders; metrics only reads /metrics on the main port (a
// Prometheus scrape key that can do nothing else).
const (
	RoleFinance Role = "finance"
	RoleOps     Role = "ops"
	RoleService Role = "service"
	RoleMetrics Role = "metrics"
)

// ValidRole reports whether r is a known role.
func ValidRole(r Role) bool {
	return r == RoleFinance || r == RoleOps || r == RoleService || r == RoleMetrics
}

// Principal is the authenticated caller of an API-key route.
type Principal struct {
	Name string `json:"name"`
	Role Role   `json:"role"`
}

// KeyLookup finds the principal owning a key, by the key's SHA-256 hex.
// Keys are never stored or compared in plain text.
type KeyLookup interface {
	LookupAPIKey(ctx context.Context, sha256Hex string) (Principal, bool, error)
}

// StaticKeys are keys from configuration, indexed by SHA-256 hex.
type StaticKeys map[string]Principal

// LookupAPIKey implements KeyLookup.
func (s StaticKeys) LookupAPIKey(_ context.Context, h string) (Principal, bool, error) {
	p, ok := s[h]
	return p, ok, nil
}

// KeyNamePattern keeps key names printable, short enough for the audit
// log and free of the ':' that separates config entries.
var KeyNamePattern = regexp.MustCompile(`^[A-Za-z0-9_.\-@]{1,64}$`)

// ParseAPIKeys reads "name:role:sha256hex" entries. A hash given twice is
// refused: one of its entries would silently win.
func ParseAPIKeys(specs []string) (StaticKeys, error) {
	out := StaticKeys{}
	for i, spec := range specs {
		parts := strings.Split(strings.TrimSpace(spec), ":")
		if len(parts) != 3 || !KeyNamePattern.MatchString(parts[0]) {
			// Named by position only: the entry may hold a hash, or a
			// key pasted in by mistake, and this error reaches the log.
			return nil, fmt.Errorf("api key entry %d of %d: want name:role:sha256hex, the name of 1-64 of A-Z a-z 0-9 _ . - @", i+1, len(specs))
		}
		name, role, h := parts[0], Role(parts[1]), strings.ToLower(parts[2])
		if !ValidRole(role) { // not quoted: with role and hash swapped, or a key pasted in, it is one of those
			return nil, fmt.Errorf("api key entry %d of %d (%s): the role is none of finance, ops, service or metrics "+
				"(want name:role:sha256hex)", i+1, len(specs), name)
		}
		if b, err := hex.DecodeString(h); err != nil || len(b) != sha256.Size {
			return nil, fmt.Errorf("api key %s: hash must be 64 hex characters of SHA-256", name)
		}
		if _, dup := out[h]; dup {
			return nil, fmt.Errorf("api key %s: its hash is given twice", name)
		}
		out[h] = Principal{Name: name, Role: role}
	}
	return out, nil
}

// HashKey returns the SHA-256 hex of an API key.
func HashKey(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:])
}

// Auth checks API keys sent in the X-Api-Key header.
type Auth struct {
	sources []KeyLookup
	// Timeout bounds a key check (NewAuth sets CheckTimeout): routes whose own
	// timeout is set later, like CSV exports, must not wait on a busy
	// database without end.
	Timeout time.Duration
	// Failures, when set, counts wrong keys per client address against
	// FailureLimit (see lockedOut). Shared through Redis, an address
	// locked out on one instance is locked out on all.
	Failures     Limiter
	FailureLimit Limit
	// Refused, when set, is told each key refused, with KeyUnknown or
	// KeyLockedOut (for metrics).
	Refused func(reason string)
}

// Reasons a key is refused, as Auth.Refused is told them.
const (
	KeyUnknown   = "unknown"
	KeyLockedOut = "locked_out"
)

// refused counts a key refused for reason and has the request's access
// line name the address it came from: neither the audit log (which keeps
// known keys only) nor the metrics say where a revoked key is still used
// from, or which address a lockout holds.
func (a *Auth) refused(c *gin.Context, reason string) {
	c.Set(refusedKeyAddrKey, c.ClientIP())
	if a.Refused != nil {
		a.Refused(reason)
	}
}

// refusedKeyAddrKey holds, for a request whose API key was refused, the
// address it came from (as http.trusted_proxies lets gin see it).
const refusedKeyAddrKey = "gateway.refused_key_addr"

// CheckTimeout bounds the database calls made before a handler runs: the
// key check and the audit entry.
const CheckTimeout = 5 * time.Second

// NewAuth asks each source in turn.
func NewAuth(sources ...KeyLookup) *Auth { return &Auth{sources: sources, Timeout: CheckTimeout} }

const principalKey = "gateway.principal"

// Authenticate lets through callers with a known key (no or unknown key →
// 401) without checking their role: RequireRole does, later in the chain
// (see Deps.keyed), so that what comes between (rate limit, audit entry)
// knows the caller.
func (a *Auth) Authenticate() gin.HandlerFunc {
	return func(c *gin.Context) {
		if a.identify(c) {
			c.Next()
		}
	}
}

// RequireRole refuses (403) a caller Authenticate let through whose key
// has none of roles.
func RequireRole(roles ...Role) gin.HandlerFunc {
	return func(c *gin.Context) {
		if allowed(c, roles) {
			c.Next()
		}
	}
}

// identify looks the caller's key up and stores its principal, or answers
// the refusal and returns false.
func (a *Auth) identify(c *gin.Context) bool {
	key := c.GetHeader("X-Api-Key")
	if key == "" {
		writeError(c, &Error{Code: CodeUnauthorized, Message: "missing X-Api-Key"})
		return false
	}
	if a.lockedOut(c) {
		return false
	}
	ctx, cancel := context.WithTimeout(c.Request.Context(), a.Timeout)
	p, ok, err := a.lookup(ctx, HashKey(key))
	cancel()
	if err != nil {
		// Counted as a wrong key: the configured and recently verified
		// keys were checked before the busy or failing database, and did
		// not match. Uncounted, a flood that keeps every slot busy, or any
		// caller while the database fails, would guess at the configured
		// keys for free. (Not a key verified here before: see errKnownKey.)
		if !errors.Is(err, errKnownKey) {
			a.countFailure(c)
		}
		if errors.Is(err, ErrKeyCheckBusy) {
			writeError(c, &Error{Code: CodeUnavailable, Message: "too many key checks at once, retry after 1 s",
				RetryAfter: time.Second})
		} else {
			writeError(c, Errorf(CodeUnavailable, "key check unavailable", err))
		}
		return false
	}
	if !ok {
		if d := a.countFailure(c); !d.Allowed {
			a.lockOutAnswer(c, d.RetryAfter)
			return false
		}
		a.refused(c, KeyUnknown)
		writeError(c, &Error{Code: CodeUnauthorized, Message: "unknown API key"})
		return false
	}
	// Asked again: guesses sent at once all pass the first look before
	// any is counted, and the right one among them must not be answered
	// once the others have locked the address out.
	if a.lockedOut(c) {
		return false
	}
	c.Set(principalKey, p)
	return true
}

// lockedOut answers 429 and returns true when the caller's address has
// sent more wrong keys than FailureLimit allows: from then on every key
// it sends, the right one too, is refused until the limit lets it try
// again, so keys cannot be guessed at the rate the API answers. It is
// asked before a key is looked up (sparing the database) and again after
// a right one; a wrong one is counted at once (countFailure), so guesses
// sent in parallel get at most the limit's burst of answers. A limiter
// that fails locks nobody out.
func (a *Auth) lockedOut(c *gin.Context) bool {
	if a.Failures == nil || a.FailureLimit.PerMinute <= 0 {
		return false
	}
	d, err := a.Failures.Peek(c.Request.Context(), failureKey(c), a.FailureLimit)
	if err != nil || d.Allowed {
		return false
	}
	a.lockOutAnswer(c, d.RetryAfter)
	return true
}

// lockOutAnswer answers 429 to a locked-out address.
func (a *Auth) lockOutAnswer(c *gin.Context, retryAfter time.Duration) {
	a.refused(c, KeyLockedOut)
	e := rateLimited(retryAfter)
	e.Message = fmt.Sprintf("too many unknown API keys from this address, retry after %d s", int(e.RetryAfter.Seconds()))
	writeError(c, e)
}

// countFailure records a wrong key against the caller's address and
// says whether the address may still be answered: not once its wrong
// keys are over the limit. A limiter that fails allows.
func (a *Auth) countFailure(c *gin.Context) Decision {
	if a.Failures == nil || a.FailureLimit.PerMinute <= 0 {
		return Decision{Allowed: true}
	}
	d, err := a.Failures.Allow(c.Request.Context(), failureKey(c), a.FailureLimit)
	if err != nil {
		slog.WarnContext(c.Request.Context(), "count a wrong API key", "err", err)
		return Decision{Allowed: true}
	}
	return d
}

// failureKey names the limiter key of the caller's address (as
// http.trusted_proxies lets gin see it); see addressBlock.
func failureKey(c *gin.Context) string { return "authfail:" + addressBlock(c.ClientIP()) }

// addressBlock is what the wrong-key lockout counts by: an IPv4 address,
// or an IPv6 address's /64. One host commonly holds a whole /64 and could
// otherwise take a fresh address for every burst of guesses.
func addressBlock(ip string) string {
	a, err := netip.ParseAddr(ip)
	if err != nil || a.Unmap().Is4() {
		return ip
	}
	p, err := a.WithZone("").Prefix(64)
	if err != nil {
		return ip
	}
	return p.String()
}

// allowed answers 403 and returns false unless the caller has one of roles.
func allowed(c *gin.Context, roles []Role) bool {
	if p := CurrentPrincipal(c); !hasRole(p.Role, roles) {
		writeError(c, &Error{Code: CodeForbidden, Message: "role " + string(p.Role) + " may not do this"})
		return false
	}
	return true
}

// ErrKeyCheckBusy is a key check refused because the most allowed are
// already running.
var ErrKeyCheckBusy = errors.New("too many key checks in flight")

// errKnownKey marks a failed check (busy, or the database failing) of a
// key this instance verified before: a real key, most likely, which the
// wrong-key lockout must not count.
var errKnownKey = errors.New("a key verified before")

// errKnownKeyBusy is ErrKeyCheckBusy for a key verified before (over
// RecentKeyTTL ago) while its own slots are full too.
var errKnownKeyBusy = fmt.Errorf("%w (%w)", ErrKeyCheckBusy, errKnownKey)

// LimitLookups lets at most n checks of src run at once and refuses the
// rest with ErrKeyCheckBusy at once: a flood of unknown keys, each a
// database query, must not take the connections payment notifications
// need. So that such a flood cannot lock out the real keys, a key src
// accepted within the last RecentKeyTTL passes without a slot while all
// are taken, and a key src accepted before that is checked again on a
// slot of its own that unknown keys never get; otherwise every check asks
// src, so a revoked key stops working at once, or within RecentKeyTTL
// while a flood holds every slot.
func LimitLookups(src KeyLookup, n int) KeyLookup {
	return &limitedKeys{src: src, slots: newSlots(n), known: newSlots(KnownKeySlots), recent: map[string]recentKey{}}
}

// RecentKeyTTL is how long a verified key passes a full LimitLookups.
const RecentKeyTTL = time.Minute

// maxRecentKeys bounds the remembered keys (only verified ones are kept).
const maxRecentKeys = 1024

// KnownKeySlots are the checks of keys verified before that may run while
// unknown keys hold every other slot (database connections beside
// auth.max_key_lookups).
const KnownKeySlots = 2

type recentKey struct {
	p  Principal
	at time.Time
}

type limitedKeys struct {
	src   KeyLookup
	slots slots
	known slots // for keys in recent only

	mu     sync.Mutex
	recent map[string]recentKey
}

func (l *limitedKeys) LookupAPIKey(ctx context.Context, sha256Hex string) (Principal, bool, error) {
	if l.slots.take() {
		defer l.slots.give()
		return l.check(ctx, sha256Hex)
	}
	p, known, fresh := l.recently(sha256Hex)
	switch {
	case fresh:
		return p, true, nil
	case known && l.known.take():
		defer l.known.give()
		return l.check(ctx, sha256Hex)
	case known:
		return Principal{}, false, errKnownKeyBusy
	}
	return Principal{}, false, ErrKeyCheckBusy
}

// check asks src and remembers its answer, dated when it was asked: a
// yes read just before a revocation, and returned after it (the key's
// last_used_at write can take the check's whole timeout), must not pass
// a flood for longer than a minute after that read. A failure for a key
// src accepted before says so (errKnownKey).
func (l *limitedKeys) check(ctx context.Context, h string) (Principal, bool, error) {
	asked := time.Now()
	p, ok, err := l.src.LookupAPIKey(ctx, h)
	if err == nil {
		l.remember(h, p, ok, asked)
	} else if _, known, _ := l.recently(h); known {
		err = fmt.Errorf("%w (%w)", err, errKnownKey)
	}
	return p, ok, err
}

// recently says whether src accepted h before (known) and whether within
// RecentKeyTTL (fresh).
func (l *limitedKeys) recently(h string) (p Principal, known, fresh bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	r, ok := l.recent[h]
	return r.p, ok, ok && time.Since(r.at) < RecentKeyTTL
}

// remember keeps a key src verified when asked at, and forgets one src no
// longer accepts. A key already remembered from a later check keeps that
// date.
func (l *limitedKeys) remember(h string, p Principal, verified bool, at time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !verified {
		delete(l.recent, h)
		return
	}
	if r, ok := l.recent[h]; ok && r.at.After(at) {
		return
	}
	if len(l.recent) >= maxRecentKeys {
		clear(l.recent)
	}
	l.recent[h] = recentKey{p: p, at: at}
}

func (a *Auth) lookup(ctx context.Context, h string) (Principal, bool, error) {
	for _, s := range a.sources {
		p, ok, err := s.LookupAPIKey(ctx, h)
		if err != nil || ok {
			return p, ok, err
		}
	}
	return Principal{}, false, nil
}

func hasRole(r Role, allowed []Role) bool {
	for _, a := range allowed {
		if r == a {
			return true
		}
	}
	return false
}

// CurrentPrincipal returns the caller Require let through.
func CurrentPrincipal(c *gin.Context) Principal {
	p, _ := c.Get(principalKey)
	pr, _ := p.(Principal)
	return pr
}
