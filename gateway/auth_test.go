package gateway

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
)

// hangingKeys is a key store whose database never answers.
type hangingKeys struct{}

func (hangingKeys) LookupAPIKey(ctx context.Context, _ string) (Principal, bool, error) {
	<-ctx.Done()
	return Principal{}, false, ctx.Err()
}

// TestKeyCheckIsBounded: a route with no timeout of its own (a CSV export
// sets its own later) still gets an answer when the key store hangs: 503,
// not a request held for as long as the client waits.
func TestKeyCheckIsBounded(t *testing.T) {
	gin.SetMode(gin.TestMode)
	a := NewAuth(hangingKeys{})
	if a.Timeout != CheckTimeout {
		t.Fatalf("NewAuth timeout = %v, want %v", a.Timeout, CheckTimeout)
	}
	a.Timeout = 50 * time.Millisecond
	r := gin.New()
	r.GET("/x", a.Authenticate(), func(c *gin.Context) { c.Status(http.StatusOK) })
	req := httptest.NewRequest("GET", "/x", nil)
	req.Header.Set("X-Api-Key", "gwk_anything")
	w := httptest.NewRecorder()
	done := make(chan struct{})
	go func() { r.ServeHTTP(w, req); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the key check still waits after 5 s")
	}
	if w.Code != http.StatusServiceUnavailable || !strings.Contains(w.Body.String(), `"code":"EUNAVAILABLE"`) {
		t.Fatalf("status=%d body=%s, want 503 EUNAVAILABLE", w.Code, w.Body)
	}
}

func TestCheckProxies(t *testing.T) {
	if err := CheckProxies([]string{"10.0.0.0/8", "127.0.0.1", "::1", "fd00::/8"}); err != nil {
		t.Fatalf("good entries refused: %v", err)
	}
	if err := CheckProxies([]string{"2001:db8::/32", "::ffff:10.0.0.0/104", "172.16.0.0/12"}); err != nil {
		t.Fatalf("good ranges refused: %v", err)
	}
	// Too wide: any client could then name its own address.
	for _, bad := range []string{"10.0.0.0/33", "lb.internal", "", "0.0.0.0/0", "::/0", "128.0.0.0/1",
		"2000::/3", "::ffff:0.0.0.0/96", "fc00::/6"} {
		if err := CheckProxies([]string{bad}); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// gatedKeys is a key store whose lookups wait for release; entered tells
// when one has started.
type gatedKeys struct {
	entered chan struct{}
	release chan struct{}
}

func (g gatedKeys) LookupAPIKey(ctx context.Context, _ string) (Principal, bool, error) {
	g.entered <- struct{}{}
	select {
	case <-g.release:
		return Principal{}, false, nil
	case <-ctx.Done():
		return Principal{}, false, ctx.Err()
	}
}

// TestKeyLookupsAreCapped: with two database key checks running, a third
// is refused at once (503, Retry-After), a configured key still passes,
// and a freed slot is taken again.
func TestKeyLookupsAreCapped(t *testing.T) {
	gin.SetMode(gin.TestMode)
	db := gatedKeys{entered: make(chan struct{}, 8), release: make(chan struct{})}
	static := StaticKeys{HashKey("good"): {Name: "fin", Role: RoleFinance}}
	r := gin.New()
	r.GET("/x", NewAuth(static, LimitLookups(db, 2)).Authenticate(), func(c *gin.Context) { c.Status(http.StatusOK) })
	call := func(key string) *httptest.ResponseRecorder {
		req := httptest.NewRequest("GET", "/x", nil)
		req.Header.Set("X-Api-Key", key)
		w := httptest.NewRecorder()
		r.ServeHTTP(w, req)
		return w
	}
	held := make(chan int, 2)
	for i := range 2 {
		go func() { held <- call("guess-" + string(rune('a'+i))).Code }()
		<-db.entered
	}
	if w := call("guess-c"); w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") != "1" ||
		!strings.Contains(w.Body.String(), `"code":"EUNAVAILABLE"`) {
		t.Fatalf("third lookup: %d %q %s, want 503 with Retry-After 1", w.Code, w.Header().Get("Retry-After"), w.Body)
	}
	if w := call("good"); w.Code != http.StatusOK {
		t.Fatalf("configured key during the flood: %d %s", w.Code, w.Body)
	}
	close(db.release)
	for range 2 {
		if code := <-held; code != http.StatusUnauthorized {
			t.Fatalf("held lookup ended %d, want 401", code)
		}
	}
	if w := call("guess-d"); w.Code != http.StatusUnauthorized {
		t.Fatalf("lookup after the slots freed: %d %s, want 401", w.Code, w.Body)
	}
}

// switchKeys accepts "real" until revoked; lookups of other keys wait for
// release, so a flood of them can hold every slot.
type switchKeys struct {
	gatedKeys
	revoked *atomic.Bool
	limited *limitedKeys // the LimitLookups around it, for the test to age its memory
}

func (k switchKeys) LookupAPIKey(ctx context.Context, h string) (Principal, bool, error) {
	if h == HashKey("real") {
		return Principal{Name: "ops-1", Role: RoleOps}, !k.revoked.Load(), nil
	}
	return k.gatedKeys.LookupAPIKey(ctx, h)
}

// TestKeyFloodDoesNotLockOutRealKeys: while unknown keys hold every
// lookup slot, a database key verified a moment ago still passes (others
// get 503), and one verified over a minute ago is checked again on a slot
// of its own; with a slot free, each check asks the database again, so a
// revoked key is refused at once and is not let through by a later flood.
func TestKeyFloodDoesNotLockOutRealKeys(t *testing.T) {
	gin.SetMode(gin.TestMode)
	db := switchKeys{gatedKeys{entered: make(chan struct{}, 8), release: make(chan struct{})}, &atomic.Bool{}, nil}
	r := gin.New()
	db.limited = LimitLookups(db, 2).(*limitedKeys)
	r.GET("/x", NewAuth(db.limited).Authenticate(), func(c *gin.Context) { c.Status(http.StatusOK) })
	call := func(key string) int {
		req := httptest.NewRequest("GET", "/x", nil)
		req.Header.Set("X-Api-Key", key)
		w := httptest.NewRecorder()
		r.ServeHTTP(w, req)
		return w.Code
	}
	if code := call("real"); code != http.StatusOK {
		t.Fatalf("real key: %d", code)
	}
	flood := func() chan int {
		held := make(chan int, 2)
		for i := range 2 {
			go func() { held <- call("junk-" + string(rune('a'+i))) }()
			<-db.entered
		}
		return held
	}
	held := flood()
	if code := call("real"); code != http.StatusOK {
		t.Fatalf("real key during a flood of unknown keys: %d, want 200", code)
	}
	if code := call("junk-z"); code != http.StatusServiceUnavailable {
		t.Fatalf("unknown key during the flood: %d, want 503", code)
	}
	// A minute on, the flood still going: the key is checked again on a
	// slot unknown keys cannot take, and passes, or, once revoked, not.
	age := func() {
		lk := db.limited
		lk.mu.Lock()
		for h, r := range lk.recent {
			r.at = r.at.Add(-RecentKeyTTL)
			lk.recent[h] = r
		}
		lk.mu.Unlock()
	}
	age()
	if code := call("real"); code != http.StatusOK {
		t.Fatalf("real key verified over a minute ago, during the flood: %d, want 200", code)
	}
	age()
	db.revoked.Store(true)
	if code := call("real"); code != http.StatusUnauthorized {
		t.Fatalf("key revoked during the flood, a minute on: %d, want 401", code)
	}
	db.revoked.Store(false)
	db.release <- struct{}{}
	db.release <- struct{}{}
	<-held
	<-held
	if code := call("real"); code != http.StatusOK {
		t.Fatalf("real key again: %d", code)
	}
	db.revoked.Store(true)
	if code := call("real"); code != http.StatusUnauthorized {
		t.Fatalf("revoked key: %d, want 401 at once", code)
	}
	held = flood()
	if code := call("real"); code != http.StatusServiceUnavailable {
		t.Fatalf("revoked key during a flood: %d, want 503", code)
	}
	close(db.release)
	<-held
	<-held
}

// countingKeys counts the lookups that reach a key store.
type countingKeys struct {
	StaticKeys
	n atomic.Int32
}

func (k *countingKeys) LookupAPIKey(ctx context.Context, h string) (Principal, bool, error) {
	k.n.Add(1)
	return k.StaticKeys.LookupAPIKey(ctx, h)
}

// TestWrongKeysLockTheAddressOut: past its burst of wrong keys an address
// gets 429 for every key, the right one too, and none of them is looked
// up; right keys count nothing, other addresses are not affected, and the
// address may try again once the rate allows.
func TestWrongKeysLockTheAddressOut(t *testing.T) {
	gin.SetMode(gin.TestMode)
	keys := &countingKeys{StaticKeys: StaticKeys{HashKey("right"): {Name: "fin", Role: RoleFinance}}}
	lim := NewMemoryLimiter()
	now := time.Now()
	lim.now = func() time.Time { return now }
	a := NewAuth(keys)
	a.Failures, a.FailureLimit = lim, Limit{PerMinute: 30, Burst: 3}
	r := gin.New()
	r.GET("/x", a.Authenticate(), func(c *gin.Context) { c.Status(http.StatusOK) })
	send := func(addr, key string) *httptest.ResponseRecorder {
		req := httptest.NewRequest("GET", "/x", nil)
		req.RemoteAddr, req.Header["X-Api-Key"] = addr+":4000", []string{key}
		w := httptest.NewRecorder()
		r.ServeHTTP(w, req)
		return w
	}
	for range 10 {
		if w := send("10.0.0.1", "right"); w.Code != http.StatusOK {
			t.Fatalf("right key: %d %s", w.Code, w.Body)
		}
	}
	for i := range 3 {
		if w := send("10.0.0.1", "wrong"); w.Code != http.StatusUnauthorized {
			t.Fatalf("wrong key %d of the burst: %d %s, want 401", i+1, w.Code, w.Body)
		}
	}
	looked := keys.n.Load()
	for _, key := range []string{"right", "wrong"} {
		w := send("10.0.0.1", key)
		if w.Code != http.StatusTooManyRequests || !strings.Contains(w.Body.String(), `"code":"ERATE_LIMITED"`) ||
			w.Header().Get("Retry-After") != "2" {
			t.Fatalf("%s key past the burst: %d %s Retry-After %q, want 429 ERATE_LIMITED after 2 s",
				key, w.Code, w.Body, w.Header().Get("Retry-After"))
		}
	}
	if n := keys.n.Load(); n != looked {
		t.Fatalf("%d lookups made for a locked-out address", n-looked)
	}
	if w := send("10.0.0.2", "right"); w.Code != http.StatusOK {
		t.Fatalf("another address with the right key: %d %s", w.Code, w.Body)
	}
	now = now.Add(2 * time.Second)
	if w := send("10.0.0.1", "right"); w.Code != http.StatusOK {
		t.Fatalf("right key once the rate allows: %d %s", w.Code, w.Body)
	}
}

// TestBusyKeyChecksCountAsWrongKeys: with every database key check held,
// a guess refused 503 was checked against the configured keys already: it
// counts against the address, so a flood that keeps the slots busy cannot
// guess at the configured keys for free.
func TestBusyKeyChecksCountAsWrongKeys(t *testing.T) {
	gin.SetMode(gin.TestMode)
	db := gatedKeys{entered: make(chan struct{}, 8), release: make(chan struct{})}
	defer close(db.release)
	a := NewAuth(StaticKeys{HashKey("right"): {Name: "fin", Role: RoleFinance}}, LimitLookups(db, 1))
	a.Failures, a.FailureLimit = NewMemoryLimiter(), Limit{PerMinute: 1, Burst: 3}
	send := keyedSender(a)
	go send("10.0.0.9", "holder") // another address holds the one slot
	<-db.entered
	for i := range 3 {
		if code := send("10.0.0.1", fmt.Sprintf("guess-%d", i)); code != http.StatusServiceUnavailable {
			t.Fatalf("guess %d while the slot is held: %d, want 503", i, code)
		}
	}
	if code := send("10.0.0.1", "right"); code != http.StatusTooManyRequests {
		t.Fatalf("the configured key after 3 busy guesses: %d, want 429 (locked out)", code)
	}
}

// TestBusyCheckOfAKnownKeyIsNotCounted: a key this instance verified over
// a minute ago, refused 503 while every slot (its own two too) is busy, is
// most likely real: the lockout does not count it, and the key passes once
// a slot frees.
func TestBusyCheckOfAKnownKeyIsNotCounted(t *testing.T) {
	gin.SetMode(gin.TestMode)
	db := switchKeys{gatedKeys{entered: make(chan struct{}, 8), release: make(chan struct{})}, &atomic.Bool{}, nil}
	lk := LimitLookups(db, 1).(*limitedKeys)
	a := NewAuth(lk)
	a.Failures, a.FailureLimit = NewMemoryLimiter(), Limit{PerMinute: 1, Burst: 1}
	r := gin.New()
	r.GET("/x", a.Authenticate(), func(c *gin.Context) { c.Status(http.StatusOK) })
	send := func() int {
		req := httptest.NewRequest("GET", "/x", nil)
		req.RemoteAddr, req.Header["X-Api-Key"] = "10.0.0.1:4000", []string{"real"}
		w := httptest.NewRecorder()
		r.ServeHTTP(w, req)
		return w.Code
	}
	if code := send(); code != http.StatusOK {
		t.Fatalf("real key: %d", code)
	}
	lk.mu.Lock()
	for h, k := range lk.recent {
		k.at = k.at.Add(-RecentKeyTTL)
		lk.recent[h] = k
	}
	lk.mu.Unlock()
	for !lk.slots.take() {
	}
	for range KnownKeySlots {
		lk.known.take()
	}
	for i := range 3 {
		if code := send(); code != http.StatusServiceUnavailable {
			t.Fatalf("known key %d with every slot busy: %d, want 503", i, code)
		}
	}
	lk.slots.give()
	if code := send(); code != http.StatusOK {
		t.Fatalf("known key once a slot frees: %d, want 200 (not locked out)", code)
	}
}

// TestWrongKeysLockTheIPv6BlockOut: the lockout counts an IPv6 caller by
// its /64, so taking a new address of the same block for each wrong key
// does not get a fresh burst; another /64 is not affected.
func TestWrongKeysLockTheIPv6BlockOut(t *testing.T) {
	gin.SetMode(gin.TestMode)
	a := NewAuth(StaticKeys{HashKey("right"): {Name: "fin", Role: RoleFinance}})
	a.Failures, a.FailureLimit = NewMemoryLimiter(), Limit{PerMinute: 1, Burst: 3}
	r := gin.New()
	r.GET("/x", a.Authenticate(), func(c *gin.Context) { c.Status(http.StatusOK) })
	send := func(addr, key string) int {
		req := httptest.NewRequest("GET", "/x", nil)
		req.RemoteAddr, req.Header["X-Api-Key"] = "["+addr+"]:4000", []string{key}
		w := httptest.NewRecorder()
		r.ServeHTTP(w, req)
		return w.Code
	}
	for i, addr := range []string{"2001:db8:1:2::a", "2001:db8:1:2::b", "2001:db8:1:2:ffff::c"} {
		if code := send(addr, "wrong"); code != http.StatusUnauthorized {
			t.Fatalf("wrong key %d of the burst from %s: %d, want 401", i+1, addr, code)
		}
	}
	if code := send("2001:db8:1:2::d", "right"); code != http.StatusTooManyRequests {
		t.Fatalf("another address of the same /64 past the burst: %d, want 429", code)
	}
	if code := send("2001:db8:1:3::1", "right"); code != http.StatusOK {
		t.Fatalf("an address of another /64: %d, want 200", code)
	}
	if got := addressBlock("10.0.0.1"); got != "10.0.0.1" {
		t.Fatalf("IPv4 block = %q, want the address", got)
	}
}

// TestParseAPIKeysRefusesWithoutPrintingTheEntry: a malformed entry is
// refused, and the error (which reaches the log) names it by position,
// never by its hash or by a key pasted in by mistake; well-formed
// entries are read.
func TestParseAPIKeysRefusesWithoutPrintingTheEntry(t *testing.T) {
	h := HashKey("some-operator-key")
	keys, err := ParseAPIKeys([]string{"alice:finance:" + strings.ToUpper(h)})
	if err != nil || keys[h] != (Principal{Name: "alice", Role: "finance"}) {
		t.Fatalf("a good entry read as %v, %v", keys, err)
	}
	// Three fields, but the role's place holds the hash (role and hash
	// swapped) or a key pasted in.
	for _, spec := range []string{"alice smith:finance:" + h, "bob:finance:raw:secret-key-1234", "carol:" + h,
		"dave:" + h + ":finance", "erin:secret-key-1234:" + h} {
		_, err := ParseAPIKeys([]string{"alice:finance:" + HashKey("other"), spec})
		if err == nil {
			t.Fatalf("entry %q accepted", spec)
		}
		if msg := err.Error(); strings.Contains(msg, h) || strings.Contains(msg, "secret-key-1234") || !strings.Contains(msg, "entry 2 of 2") {
			t.Errorf("error %q: want entry 2 of 2 named, and neither hash nor key", msg)
		}
	}
}

// slowLimiter gives every call a round trip, as Redis does.
type slowLimiter struct {
	Limiter
	rtt time.Duration
}

func (s slowLimiter) Allow(ctx context.Context, k string, l Limit) (Decision, error) {
	time.Sleep(s.rtt)
	return s.Limiter.Allow(ctx, k, l)
}

func (s slowLimiter) Peek(ctx context.Context, k string, l Limit) (Decision, error) {
	time.Sleep(s.rtt)
	return s.Limiter.Peek(ctx, k, l)
}

// sendKeys sends one request per key from addr, all at once, and counts
// the answers by status.
func sendKeys(r http.Handler, addr string, keys []string) map[int]int {
	var mu sync.Mutex
	codes := map[int]int{}
	var wg sync.WaitGroup
	start := make(chan struct{})
	for _, k := range keys {
		wg.Go(func() {
			<-start
			req := httptest.NewRequest("GET", "/x", nil)
			req.RemoteAddr, req.Header["X-Api-Key"] = addr+":4000", []string{k}
			w := httptest.NewRecorder()
			r.ServeHTTP(w, req)
			mu.Lock()
			codes[w.Code]++
			mu.Unlock()
		})
	}
	close(start)
	wg.Wait()
	return codes
}

// TestParallelGuessesGetAtMostTheBurst sends 300 wrong keys from one
// address at once, through a limiter with a round trip: every guess
// passes the first look before any is counted, yet no more than the
// burst are answered 401; the rest get 429 and learn nothing.
func TestParallelGuessesGetAtMostTheBurst(t *testing.T) {
	gin.SetMode(gin.TestMode)
	a := NewAuth(StaticKeys{HashKey("right"): {Name: "fin", Role: RoleFinance}})
	a.Failures, a.FailureLimit = slowLimiter{NewMemoryLimiter(), 2 * time.Millisecond}, Limit{PerMinute: 1, Burst: 20}
	r := gin.New()
	r.GET("/x", a.Authenticate(), func(c *gin.Context) { c.Status(http.StatusOK) })
	keys := make([]string, 300)
	for i := range keys {
		keys[i] = fmt.Sprintf("guess-%d", i)
	}
	codes := sendKeys(r, "10.0.0.1", keys)
	if codes[http.StatusUnauthorized] > 20 || codes[http.StatusUnauthorized]+codes[http.StatusTooManyRequests] != 300 {
		t.Fatalf("answers %v: want at most 20 × 401, the rest 429", codes)
	}
}

// heldKey holds the lookup of one key until released.
type heldKey struct {
	StaticKeys
	held             string
	entered, release chan struct{}
}

func (k heldKey) LookupAPIKey(ctx context.Context, h string) (Principal, bool, error) {
	if h == k.held {
		k.entered <- struct{}{}
		<-k.release
	}
	return k.StaticKeys.LookupAPIKey(ctx, h)
}

// TestRightKeyAmongParallelGuessesIsLockedOut: the right key, looked up
// while the guesses sent with it lock its address out, is refused 429 like
// them. Answered, it would tell a guesser which of a wave was right.
func TestRightKeyAmongParallelGuessesIsLockedOut(t *testing.T) {
	gin.SetMode(gin.TestMode)
	keys := heldKey{StaticKeys: StaticKeys{HashKey("right"): {Name: "fin", Role: RoleFinance}},
		held: HashKey("right"), entered: make(chan struct{}, 1), release: make(chan struct{})}
	a := NewAuth(keys)
	a.Failures, a.FailureLimit = NewMemoryLimiter(), Limit{PerMinute: 1, Burst: 3}
	r := gin.New()
	r.GET("/x", a.Authenticate(), func(c *gin.Context) { c.Status(http.StatusOK) })
	right := make(chan map[int]int)
	go func() { right <- sendKeys(r, "10.0.0.1", []string{"right"}) }()
	<-keys.entered // past the first look, its lookup held
	if codes := sendKeys(r, "10.0.0.1", []string{"g1", "g2", "g3", "g4"}); codes[http.StatusUnauthorized] != 3 {
		t.Fatalf("guesses: %v, want 3 × 401 then 429", codes)
	}
	close(keys.release)
	if codes := <-right; codes[http.StatusTooManyRequests] != 1 {
		t.Fatalf("the right key after its wave locked the address out: %v, want 429", codes)
	}
	if codes := sendKeys(r, "10.0.0.2", []string{"right"}); codes[http.StatusOK] != 1 {
		t.Fatalf("the right key from another address: %v, want 200", codes)
	}
}

// failingKeys answers every check with an error, as a database that is
// down does; ok keys pass while up is set.
type failingKeys struct{ up *atomic.Bool }

func (k failingKeys) LookupAPIKey(_ context.Context, h string) (Principal, bool, error) {
	if k.up.Load() {
		return Principal{Name: "ops-1", Role: RoleOps}, h == HashKey("real"), nil
	}
	return Principal{}, false, errors.New("dial tcp db:3306: connection refused")
}

// TestFailedKeyChecksCountAsWrongKeys: a guess answered 503 because the
// database failed was checked against the configured keys first, like one
// refused while every slot was busy: it counts against the address, or
// an address would guess at the configured keys for free while the
// database is down. A key this instance verified before is not counted:
// it is most likely real, and passes once the database is back.
func TestFailedKeyChecksCountAsWrongKeys(t *testing.T) {
	gin.SetMode(gin.TestMode)
	up := &atomic.Bool{}
	a := NewAuth(StaticKeys{HashKey("right"): {Name: "fin", Role: RoleFinance}}, LimitLookups(failingKeys{up}, 4))
	a.Failures, a.FailureLimit = NewMemoryLimiter(), Limit{PerMinute: 1, Burst: 3}
	send := keyedSender(a)
	up.Store(true)
	if code := send("10.0.0.2", "real"); code != http.StatusOK {
		t.Fatalf("database key while the database is up: %d", code)
	}
	up.Store(false)
	for i := range 3 {
		if code := send("10.0.0.1", fmt.Sprintf("guess-%d", i)); code != http.StatusServiceUnavailable {
			t.Fatalf("guess %d while the database fails: %d, want 503", i, code)
		}
		if code := send("10.0.0.2", "real"); code != http.StatusServiceUnavailable {
			t.Fatalf("known key %d while the database fails: %d, want 503", i, code)
		}
	}
	if code := send("10.0.0.1", "right"); code != http.StatusTooManyRequests {
		t.Fatalf("the configured key after 3 guesses while the database fails: %d, want 429 (locked out)", code)
	}
	up.Store(true)
	if code := send("10.0.0.2", "real"); code != http.StatusOK {
		t.Fatalf("known key once the database is back: %d, want 200 (not locked out)", code)
	}
}

// keyedSender serves GET /x behind a.Authenticate and returns a func that
// sends key from addr (port 4000) and returns the status.
func keyedSender(a *Auth) func(addr, key string) int {
	r := gin.New()
	r.GET("/x", a.Authenticate(), func(c *gin.Context) { c.Status(http.StatusOK) })
	return func(addr, key string) int {
		req := httptest.NewRequest("GET", "/x", nil)
		req.RemoteAddr, req.Header["X-Api-Key"] = addr+":4000", []string{key}
		w := httptest.NewRecorder()
		r.ServeHTTP(w, req)
		return w.Code
	}
}

// TestFinanceRequestIsBoundedAsAWhole: on the finance routes the API
// timeout starts before the key check (and the audit entry), so a request
// meeting a hung key store is answered 503 within it, not after the key
// check's own bound and then the API timeout (past http.write_timeout,
// whose cut-off the client sees as a dropped connection). A CSV export,
// which sets its own longer bound, is not cut by the API timeout.
func TestFinanceRequestIsBoundedAsAWhole(t *testing.T) {
	gin.SetMode(gin.TestMode)
	a := NewAuth(hangingKeys{})
	a.Timeout = 2 * time.Second
	r := NewRouter(Deps{Auth: a, APITimeout: 100 * time.Millisecond, Routes: []func(*gin.Engine, *Deps){(&Finance{}).Routes}})
	ask := func(path, accept string) (int, time.Duration) {
		req := httptest.NewRequest("GET", path, nil)
		req.Header.Set("X-Api-Key", "gwk_anything")
		req.Header.Set("Accept", accept)
		w := httptest.NewRecorder()
		start := time.Now()
		r.ServeHTTP(w, req)
		return w.Code, time.Since(start)
	}
	for _, path := range []string{"/v1/ledger/totals", "/v1/ledger/payments", "/v1/ledger/audit"} {
		if code, took := ask(path, "application/json"); code != http.StatusServiceUnavailable || took >= a.Timeout {
			t.Errorf("%s: %d after %v, want 503 within the API timeout (not the key check's %v)", path, code, took, a.Timeout)
		}
	}
	if code, took := ask("/v1/ledger/payments", "text/csv"); code != http.StatusServiceUnavailable || took < a.Timeout {
		t.Errorf("CSV export: %d after %v, want 503 after the key check's own %v", code, took, a.Timeout)
	}
}

// slowTouchKeys answers "real" as the database did when the lookup read
// it, and holds the first lookup's answer (its last_used_at write, say)
// until released, as a revocation commits in between.
type slowTouchKeys struct {
	revoked *atomic.Bool
	read    chan struct{} // the held lookup has read the key
	release chan struct{}
	held    *atomic.Bool
}

func (k slowTouchKeys) LookupAPIKey(context.Context, string) (Principal, bool, error) {
	ok := !k.revoked.Load()
	if k.held.CompareAndSwap(false, true) {
		k.read <- struct{}{}
		<-k.release
	}
	return Principal{Name: "ops-1", Role: RoleOps}, ok, nil
}

// TestKeyRevokedDuringItsLookupIsNotRecachedPastTheMinute: a lookup reads
// a key just before it is revoked and answers after a newer lookup found it
// revoked. While a flood holds every slot, the key may pass at most until
// a minute after that read, the last time the database said yes: so no
// longer than a minute after its revocation (README: "a key revoked within
// that minute may pass"). Dated by when the answer arrived, the stale yes
// outlived the revocation by the lookup's whole length (up to its 5 s).
func TestKeyRevokedDuringItsLookupIsNotRecachedPastTheMinute(t *testing.T) {
	db := slowTouchKeys{revoked: &atomic.Bool{}, read: make(chan struct{}), release: make(chan struct{}), held: &atomic.Bool{}}
	lk := LimitLookups(db, 2).(*limitedKeys)
	h := HashKey("real")
	first := make(chan bool)
	go func() {
		_, ok, _ := lk.LookupAPIKey(context.Background(), h)
		first <- ok
	}()
	<-db.read
	db.revoked.Store(true)
	revokedAt := time.Now()
	if _, ok, _ := lk.LookupAPIKey(context.Background(), h); ok {
		t.Fatal("lookup after the revocation: ok")
	}
	time.Sleep(100 * time.Millisecond) // the first lookup's write is slow
	close(db.release)
	if !<-first {
		t.Fatal("the lookup that read the key before its revocation: not ok")
	}
	// Now is a minute after the revocation: move the memory back by what
	// is left of that minute.
	back := RecentKeyTTL - time.Since(revokedAt)
	lk.mu.Lock()
	for k, r := range lk.recent {
		r.at = r.at.Add(-back)
		lk.recent[k] = r
	}
	lk.mu.Unlock()
	for lk.slots.take() { // a flood of unknown keys holds every slot
	}
	if _, ok, err := lk.LookupAPIKey(context.Background(), h); ok || err != nil {
		t.Fatalf("key revoked a minute ago, during a flood: ok=%v err=%v, want refused by the database", ok, err)
	}
}
