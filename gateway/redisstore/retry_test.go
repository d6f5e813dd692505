package redisstore_test

import (
	"bytes"
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"paygateway/gateway"
	"paygateway/gateway/redisstore"
	"paygateway/gateway/redisstore/redistest"
)

// slowFirstReply proxies to Redis and holds back the reply to the first
// command mentioning marker past the client's read timeout, so go-redis
// sends the command again after the first already took effect.
func slowFirstReply(t *testing.T, target, marker string, delay time.Duration) string {
	addr, _ := slowReplies(t, target, map[string]time.Duration{marker: delay})
	return addr
}

// retryTimings has the first reply held 3 s, past a read timeout of 1 s,
// and gives the call 4 s: the retry's own round trip (a new connection
// through the proxy) has seconds, not the 100 ms a read timeout of 100 ms
// left it, which a loaded race-enabled run outlasted (i/o timeout).
func retryTimings(cfg *redisstore.Config) time.Duration {
	cfg.ReadTimeout, cfg.OpTimeout = time.Second, 4*time.Second
	return 3 * time.Second
}

func TestRetriedAdmitStillSeesItsOwnWrite(t *testing.T) {
	base := redistest.Config(t)
	cfg := base
	held := retryTimings(&cfg)
	cfg.Addr = slowFirstReply(t, base.Addr, "nonce-retried", held)
	c := redisstore.NewClient(cfg)
	t.Cleanup(func() { c.Close() })
	s := redisstore.New(c, cfg)
	k := gateway.GateKeys{Nonce: "nonce-retried", NotifyID: "id-retried", Lock: "pay:retried"}
	a, err := s.Admit(context.Background(), k, ttls)
	if err != nil {
		t.Fatalf("Admit: %v", err)
	}
	if a.Replay || a.Token == "" {
		t.Fatalf("a genuine first delivery after a client retry: %+v, want fresh and locked", a)
	}
	k.Lock = "pay:other"
	if again, _ := s.Admit(context.Background(), k, ttls); !again.Replay {
		t.Fatalf("the replay of the nonce was admitted: %+v", again)
	}
}

// TestTimedOutAdmitLeavesNoLock: the admit script runs but its answer comes
// after the caller gave up (and fell back to memory); the lock it took is
// released soon after, not held for nobody for the lock TTL (a redelivery
// to another instance would wait on it).
func TestTimedOutAdmitLeavesNoLock(t *testing.T) {
	s, base, direct := lateReplyStore(t, "nonce-late")
	k := gateway.GateKeys{Nonce: "nonce-late", NotifyID: "id-late", Lock: "pay:late"}
	long := gateway.GateTTLs{Nonce: time.Minute, Lock: 10 * time.Second, Done: time.Minute}
	if _, err := s.Admit(context.Background(), k, long); err == nil {
		t.Fatal("Admit answered within its timeout; the proxy did not hold the reply")
	}
	waitReleased(t, direct, base.Prefix+"lock:pay:late")
	if n, _ := direct.Exists(context.Background(), base.Prefix+"nonce-late").Result(); n != 1 {
		t.Fatal("the admit never ran: nothing was tested")
	}
}

// TestTimedOutLockLeavesNoLock: as for Admit, a lock whose SET ran but
// whose answer came after the caller gave up is released soon after. The
// proxy forwards the SET at once and holds only its reply, so the timeout
// means the SET ran.
func TestTimedOutLockLeavesNoLock(t *testing.T) {
	s, base, direct := lateReplyStore(t, "order-late")
	// The script loaded beforehand: otherwise the held reply may be
	// EVALSHA's NOSCRIPT, the SET never runs, and nothing is tested.
	warm := redisstore.New(direct, base)
	defer warm.Close()
	if _, _, err := warm.TryLock(context.Background(), "order-warm", time.Second); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.TryLock(context.Background(), "order-late", 10*time.Second); err == nil {
		t.Fatal("TryLock answered within its timeout; the proxy did not hold the reply")
	}
	waitReleased(t, direct, base.Prefix+"lock:order-late")
}

// lateReplyStore is a store whose first command mentioning marker is
// answered 3 s late, past its 1 s op timeout (room for a first dial
// through the proxy on a loaded machine: the command must reach Redis
// before the caller gives up, or nothing is tested), plus the base config
// and a client that reaches Redis directly.
func lateReplyStore(t *testing.T, marker string) (*redisstore.Store, redisstore.Config, *redis.Client) {
	base := redistest.Config(t)
	cfg := base
	cfg.Addr = slowFirstReply(t, base.Addr, marker, 3*time.Second)
	cfg.OpTimeout = time.Second
	c := redisstore.NewClient(cfg)
	t.Cleanup(func() { c.Close() })
	direct := redisstore.NewClient(base)
	t.Cleanup(func() { direct.Close() })
	return redisstore.New(c, cfg), base, direct
}

// waitReleased waits up to 5 s for lock to be gone.
func waitReleased(t *testing.T, direct *redis.Client, lock string) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if n, err := direct.Exists(context.Background(), lock).Result(); err == nil && n == 0 {
			return
		}
	}
	ttl, _ := direct.PTTL(context.Background(), lock).Result()
	t.Fatalf("lock %s still held %v after the call timed out", lock, ttl)
}

// slowReplies proxies to Redis and holds back, once per marker, the reply
// to the first command mentioning it, by that marker's delay. The channel
// of a marker gets the time that command was passed on to Redis.
func slowReplies(t *testing.T, target string, delays map[string]time.Duration) (string, map[string]<-chan time.Time) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var mu sync.Mutex
	seen := map[string]bool{}
	sent, passed := map[string]chan time.Time{}, map[string]<-chan time.Time{}
	for m := range delays {
		sent[m] = make(chan time.Time, 1)
		passed[m] = sent[m]
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			var pending []time.Duration // delays owed to this connection's next replies
			go func() {
				buf := make([]byte, 4096)
				for {
					n, err := c.Read(buf)
					if err != nil {
						up.Close()
						return
					}
					mu.Lock()
					var first []string
					for m, d := range delays {
						if !seen[m] && bytes.Contains(buf[:n], []byte(m)) {
							seen[m] = true
							pending = append(pending, d)
							first = append(first, m)
						}
					}
					mu.Unlock()
					if _, err := up.Write(buf[:n]); err != nil {
						return
					}
					for _, m := range first {
						sent[m] <- time.Now()
					}
				}
			}()
			go func() {
				buf := make([]byte, 4096)
				for {
					n, err := up.Read(buf)
					if err != nil {
						c.Close()
						return
					}
					mu.Lock()
					var d time.Duration
					if len(pending) > 0 {
						d, pending = pending[0], pending[1:]
					}
					mu.Unlock()
					time.Sleep(d)
					if _, err := c.Write(buf[:n]); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String(), passed
}

// TestAbandonedAdmitRetriedByTheClientLeavesNoLock: the pipeline's one
// worker is busy with another call, so the admit is sent late; its caller
// gives up before go-redis, whose read timed out, sends it again, and
// that retry takes the lock after the caller left. The lock's release
// must come after the retry, not when the caller gave up.
func TestAbandonedAdmitRetriedByTheClientLeavesNoLock(t *testing.T) {
	base := redistest.Config(t)
	cfg := base
	// Times from when the blocker reaches Redis: its reply comes at 800 ms,
	// within the read timeout (1.2 s); the admit, sent when it is done, is
	// given up by its caller at 1.4 s, before go-redis's read of it times
	// out (about 2 s) and sends it again; that retry has until the round
	// trip's own op timeout (about 2.8 s). 400 ms or more each way, for a
	// loaded machine. (Before, the retry had 100 ms: a late one outlived
	// the round trip, and the release queued then could reach Redis before
	// it, leaving the lock held.)
	addr, sent := slowReplies(t, base.Addr, map[string]time.Duration{"nonce-blocker": 800 * time.Millisecond, "nonce-retry-late": 5 * time.Second})
	cfg.Addr = addr
	cfg.ReadTimeout, cfg.OpTimeout = 1200*time.Millisecond, 2*time.Second
	c := redisstore.NewClient(cfg)
	t.Cleanup(func() { c.Close() })
	s := redisstore.New(c, cfg)
	long := gateway.GateTTLs{Nonce: time.Minute, Lock: 10 * time.Second, Done: time.Minute}
	blocker := make(chan struct{})
	go func() {
		defer close(blocker)
		_, _ = s.Admit(context.Background(), gateway.GateKeys{Nonce: "nonce-blocker", NotifyID: "id-blocker", Lock: "pay:blocker"}, long)
	}()
	var at time.Time
	select { // the blocker holds the worker until its reply comes
	case at = <-sent["nonce-blocker"]:
	case <-time.After(10 * time.Second):
		t.Fatal("the blocker was never sent")
	}
	k := gateway.GateKeys{Nonce: "nonce-retry-late", NotifyID: "id-retry-late", Lock: "pay:retry-late"}
	ctx, cancel := context.WithDeadline(context.Background(), at.Add(1400*time.Millisecond))
	defer cancel()
	if _, err := s.Admit(ctx, k, long); err == nil {
		t.Fatal("Admit answered within its timeout; the proxy did not hold the reply")
	}
	<-blocker
	direct := redisstore.NewClient(base)
	t.Cleanup(func() { direct.Close() })
	lock := base.Prefix + "lock:pay:retry-late"
	time.Sleep(time.Until(at.Add(4 * time.Second))) // past the client's retry (by 2.8 s at the latest) and the release after it
	if n, _ := direct.Exists(context.Background(), base.Prefix+"nonce-retry-late").Result(); n != 1 {
		t.Fatal("the admit never ran: nothing was tested")
	}
	if n, err := direct.Exists(context.Background(), lock).Result(); err != nil || n != 0 {
		ttl, _ := direct.PTTL(context.Background(), lock).Result()
		t.Fatalf("lock %s still held %v after the abandoned, retried admit", lock, ttl)
	}
}
