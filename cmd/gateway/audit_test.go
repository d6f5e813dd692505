package main

import (
	"bufio"
	"cmp"
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"paygateway/ledger"
)

// auditLog returns the whole audit log, newest first.
func auditLog(t *testing.T, m *Main) []ledger.AuditEntry {
	t.Helper()
	entries, err := m.Store.AuditLog(context.Background(), 1000)
	if err != nil {
		t.Fatal(err)
	}
	return entries
}

// TestAuditAddressCannotBeForged: a caller's X-Forwarded-For is believed
// only from a configured proxy; otherwise the audit log keeps the TCP peer.
func TestAuditAddressCannotBeForged(t *testing.T) {
	cases := []struct {
		name    string
		proxies []string
		want    string
	}{{"no proxies", nil, "127.0.0.1"}, {"loopback is the proxy", []string{"127.0.0.1/32"}, "10.9.9.9"}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t, backends[0])
			cfg.HTTP.TrustedProxies = tc.proxies
			m := startGateway(t, cfg)
			req, _ := http.NewRequest("GET", m.URL()+"/v1/ledger/payments", nil)
			req.Header.Set("X-Api-Key", financeKey)
			req.Header.Set("X-Forwarded-For", "10.9.9.9")
			resp, err := httpClient.Do(req)
			if err != nil || resp.StatusCode != 200 {
				t.Fatalf("GET: %v %v", resp, err)
			}
			resp.Body.Close()
			entries := auditLog(t, m)
			if len(entries) != 1 || entries[0].RemoteAddr != tc.want {
				t.Fatalf("audit log %+v, want one entry from %s", entries, tc.want)
			}
		})
	}
}

// TestOpsAndOrderRequestsAreAudited: every request made with a known API
// key is in the audit log, including replaying dead letters, registering
// orders and a key refused for its role.
func TestOpsAndOrderRequestsAreAudited(t *testing.T) {
	m := startGateway(t, testConfig(t, backends[0]))
	no := uniqueNo("au")
	calls := []struct {
		method, path, key string
		body              any
		status            int
	}{
		{"POST", "/v1/ops/outbox/999999/replay", opsKey, nil, 404}, // no such job (no If-Match either)
		{"GET", "/v1/ops/outbox/dead", opsKey, nil, 200},
		{"POST", "/v1/orders", serviceKey, order(no, 1000), 201},
		{"POST", "/v1/ops/outbox/1/replay", financeKey, nil, 403},
		{"POST", "/v1/orders?by=ops", opsKey, order(uniqueNo("au"), 1000), 403},
	}
	for _, c := range calls {
		if status, body := apiCall(t, c.method, m.URL()+c.path, c.key, c.body); status != c.status {
			t.Fatalf("%s %s: %d %v, want %d", c.method, c.path, status, body, c.status)
		}
	}
	got := map[string]int{}
	for _, e := range auditLog(t, m) {
		got[e.Method+" "+e.Path] = e.Status
	}
	for _, c := range calls {
		if s, ok := got[c.method+" "+c.path]; !ok || s != c.status {
			t.Errorf("%s %s: audited %v with status %d, want status %d (log %v)", c.method, c.path, ok, s, c.status, got)
		}
	}
}

// TestCSVExportsAreCapped: only max_exports run at once; the next is 429
// with Retry-After, and a slot frees when an export ends. An export whose
// client stops reading holds no database connection: on SQLite's single
// connection, notifications and JSON pages still go through meanwhile.
func TestCSVExportsAreCapped(t *testing.T) {
	m, held := heldExport(t, func(c *Config) { c.Finance.MaxExports = 1 })
	u := m.URL() + "/v1/ledger/payments?limit=1"
	status, body, hdr := getRaw(t, u, financeKey, "text/csv")
	if status != 429 || hdr.Get("Retry-After") != "10" || !strings.Contains(string(body), "ERATE_LIMITED") {
		t.Fatalf("second export: %d %s Retry-After %q, want 429 ERATE_LIMITED, 10", status, body, hdr.Get("Retry-After"))
	}
	if status, body, _ := getRaw(t, u, financeKey, ""); status != 200 {
		t.Fatalf("a JSON page while the export runs: %d %s", status, body)
	}
	payViaCallback(t, m, uniqueNo("ex"), 100)
	held.Close()
	waitFor(t, 10*time.Second, "an export after the first one ended", func() bool {
		status, _, _ := getRaw(t, u, financeKey, "text/csv")
		return status == 200
	})
}

// heldExport starts a SQLite gateway configured by set, with 2,000
// payments, and holds one CSV export of them open (see holdExport).
func heldExport(t *testing.T, set func(*Config)) (*Main, net.Conn) {
	t.Helper()
	cfg := testConfig(t, backends[0])
	set(&cfg)
	m := startGatewayWith(t, cfg, func(m *Main) { m.listener = smallBuffers{m.listener} })
	seedPayments(t, m, "ex", 2000)
	return m, holdExport(t, m)
}

// smallBuffers sets small socket buffers on the gateway's connections, so
// that an export a client does not read blocks after some kilobytes, not
// the megabytes the kernel's autotuning would otherwise take (seeding
// enough rows for that cost SQLite under -race a minute and a half).
type smallBuffers struct{ net.Listener }

func (l smallBuffers) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetWriteBuffer(8 << 10)
	}
	return c, err
}

// holdExport starts a CSV export of every payment and reads no further
// than its status line, so the export blocks on a full socket (the
// client's receive buffer is set small before it connects).
func holdExport(t *testing.T, m *Main) net.Conn {
	t.Helper()
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		return cmp.Or(err, serr)
	}}
	conn, err := d.Dial("tcp", m.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	fmt.Fprintf(conn, "GET /v1/ledger/payments HTTP/1.1\r\nHost: gw\r\nX-Api-Key: %s\r\nAccept: text/csv\r\n\r\n", financeKey)
	line, err := bufio.NewReaderSize(conn, 16).ReadString('\n')
	if err != nil || !strings.Contains(line, " 200 ") {
		t.Fatalf("held export: %q %v", line, err)
	}
	return conn
}

// TestBackOfficeBulkhead: with finance.max_requests finance and ops
// requests in flight (here one export whose client stopped reading), more
// are answered 503 at once, writing nothing (not even an audit row: the
// bulkhead keeps them off the database), while order registration and
// payment notifications, on the paying user's path, go through.
func TestBackOfficeBulkhead(t *testing.T) {
	m, held := heldExport(t, func(c *Config) { c.Finance.MaxRequests = 1 })
	audited := len(auditLog(t, m))
	for _, u := range []string{"/v1/ledger/payments?limit=1", "/v1/ops/outbox/dead"} {
		key := financeKey
		if strings.HasPrefix(u, "/v1/ops") {
			key = opsKey
		}
		status, body, hdr := getRaw(t, m.URL()+u, key, "")
		if status != 503 || hdr.Get("Retry-After") != "1" || !strings.Contains(string(body), "EUNAVAILABLE") {
			t.Fatalf("%s while the bulkhead is full: %d %s Retry-After %q, want 503 EUNAVAILABLE, 1", u, status, body, hdr.Get("Retry-After"))
		}
	}
	if n := len(auditLog(t, m)); n != audited {
		t.Fatalf("the audit log went from %d to %d rows on requests the bulkhead refused", audited, n)
	}
	if status, body := apiCall(t, "POST", m.URL()+"/v1/orders", serviceKey, order(uniqueNo("bh"), 100)); status != 201 {
		t.Fatalf("order registration while the bulkhead is full: %d %v", status, body)
	}
	payViaCallback(t, m, uniqueNo("bh"), 100)
	held.Close()
	waitFor(t, 10*time.Second, "a finance request after the export ended", func() bool {
		status, _, _ := getRaw(t, m.URL()+"/v1/ledger/payments?limit=1", financeKey, "")
		return status == 200
	})
}

// TestPaddedQueryIsNotServed: the audit log keeps a request's path with
// its query up to ledger.MaxAuditPath bytes. Empty pairs ("&&&…") are a
// well-formed query, so padding could push a filter (whose payments were
// exported) past the cut while the request is served with it: a longer
// request is refused 413, and audited as refused.
func TestPaddedQueryIsNotServed(t *testing.T) {
	m := startGateway(t, testConfig(t, backends[0]))
	path := "/v1/ledger/payments?" + strings.Repeat("&", 2100) + "payer_openid=o-victim&format=csv"
	status, body := apiCall(t, "GET", m.URL()+path, financeKey, nil)
	if status != 413 || body["code"] != "ETOO_LARGE" {
		t.Fatalf("padded export: status %d body %v, want 413 ETOO_LARGE", status, body)
	}
	entries := auditLog(t, m)
	if len(entries) != 1 || entries[0].Status != 413 {
		t.Fatalf("audit log %+v, want the one refused request", entries)
	}
	short := "/v1/ledger/payments?" + strings.Repeat("&", 1900) + "payer_openid=o-victim"
	if status, body := apiCall(t, "GET", m.URL()+short, financeKey, nil); status != 200 {
		t.Fatalf("a padded query that fits: status %d body %v, want 200", status, body)
	}
	if e := auditLog(t, m); len(e) != 2 || !strings.Contains(e[0].Path+e[1].Path, "payer_openid=o-victim") {
		t.Fatalf("audit log %d entries; want the served request with its filter", len(e))
	}
}
