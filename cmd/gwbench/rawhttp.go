package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"sync"
	"time"

	"paygateway/gateway/wechatpay/wxpaysim"
)

// rawPoster sends pre-encoded HTTP/1.1 requests over kept-alive
// connections and parses the answers itself, as a load generator like
// wrk does: the driver shares the cores with the gateway, so its own
// cost per request must stay small. Requests are encoded before a timed
// phase, like signatures.
type rawPoster struct {
	host string
	path string
	// idle are the kept-alive connections, the most recently used last:
	// a request takes that one, as net/http's Transport does. Taking the
	// oldest instead, after an overload opened thousands, gave each one
	// seconds of idling, and the gateway near its connection cap closes
	// connections idle for 250 ms: requests sent on them failed with EOF.
	mu   sync.Mutex
	idle []*rawConn
	// maxIdle drops a kept-alive connection idle for longer, before the
	// gateway's own idle timeout (60 s by default) closes it: signing a
	// large phase's requests can take longer than that, and a request
	// sent on a connection the gateway just closed fails with EOF.
	maxIdle time.Duration
}

type rawConn struct {
	c         net.Conn
	r         *bufio.Reader
	idleSince time.Time
}

// defaultMaxIdle is rawPoster.maxIdle: half the gateway's default
// http.idle_timeout.
const defaultMaxIdle = 30 * time.Second

func newRawPoster(base, path string) (*rawPoster, error) {
	u, err := url.Parse(base)
	if err != nil {
		return nil, err
	}
	return &rawPoster{host: u.Host, path: path, maxIdle: defaultMaxIdle}, nil
}

// encode writes n as one HTTP/1.1 request.
func (p *rawPoster) encode(n wxpaysim.Notification) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "POST %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: Mozilla/4.0\r\n", p.path, p.host)
	fmt.Fprintf(&b, "Content-Type: application/json\r\nContent-Length: %d\r\n", len(n.Body))
	for k, vs := range n.Header {
		for _, v := range vs {
			fmt.Fprintf(&b, "%s: %s\r\n", k, v)
		}
	}
	b.WriteString("\r\n")
	b.Write(n.Body)
	return b.Bytes()
}

func (p *rawPoster) encodeAll(ns []wxpaysim.Notification) [][]byte {
	out := make([][]byte, len(ns))
	for i, n := range ns {
		out[i] = p.encode(n)
	}
	return out
}

// send writes req and reads the answer; any 2xx is success (the ledger
// checks then verify that each one was recorded, once).
func (p *rawPoster) send(req []byte) error {
	c, err := p.conn()
	if err != nil {
		return err
	}
	_ = c.c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := c.c.Write(req); err != nil {
		c.c.Close()
		return err
	}
	status, body, keep, err := readResponse(c.r)
	if err != nil {
		c.c.Close()
		return err
	}
	if keep {
		c.idleSince = time.Now()
		p.mu.Lock()
		p.idle = append(p.idle, c)
		p.mu.Unlock()
	} else {
		c.c.Close()
	}
	if status/100 != 2 {
		return fmt.Errorf("status %d: %s", status, body)
	}
	return nil
}

// readResponse reads one HTTP/1.1 answer with a Content-Length body (or
// none), the only kind the gateway sends to these requests, without the
// allocations of http.ReadResponse.
func readResponse(r *bufio.Reader) (status int, body []byte, keep bool, err error) {
	line, err := r.ReadSlice('\n')
	if err != nil {
		return 0, nil, false, err
	}
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.1 ")) {
		return 0, nil, false, fmt.Errorf("bad status line %q", line)
	}
	if status, err = strconv.Atoi(string(line[9:12])); err != nil {
		return 0, nil, false, fmt.Errorf("bad status line %q", line)
	}
	length, keep := 0, true
	for {
		if line, err = r.ReadSlice('\n'); err != nil {
			return 0, nil, false, err
		}
		if len(line) <= 2 {
			break
		}
		name, value, _ := bytes.Cut(bytes.TrimRight(line, "\r\n"), []byte(":"))
		value = bytes.TrimSpace(value)
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			length, _ = strconv.Atoi(string(value))
		case bytes.EqualFold(name, []byte("Connection")) && bytes.EqualFold(value, []byte("close")):
			keep = false
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			return 0, nil, false, fmt.Errorf("unexpected Transfer-Encoding %s", value)
		}
	}
	body = make([]byte, length)
	_, err = io.ReadFull(r, body)
	return status, body, keep, err
}

// conn takes the most recently used kept-alive connection, if it has not
// idled past maxIdle (then none has: all are closed), or dials a new one.
func (p *rawPoster) conn() (*rawConn, error) {
	p.mu.Lock()
	var c *rawConn
	if n := len(p.idle); n > 0 {
		c, p.idle = p.idle[n-1], p.idle[:n-1]
	}
	p.mu.Unlock()
	if c != nil && time.Since(c.idleSince) <= p.maxIdle {
		return c, nil
	}
	if c != nil {
		c.c.Close()
		p.close()
	}
	nc, err := net.DialTimeout("tcp", p.host, 5*time.Second)
	if err != nil {
		return nil, err
	}
	return &rawConn{c: nc, r: bufio.NewReaderSize(nc, 4096)}, nil
}

// close closes the kept-alive connections; later requests dial anew.
func (p *rawPoster) close() {
	p.mu.Lock()
	idle := p.idle
	p.idle = nil
	p.mu.Unlock()
	for _, c := range idle {
		c.c.Close()
	}
}
