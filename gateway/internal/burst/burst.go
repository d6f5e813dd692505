// Package burst serves tests that check how many connections a client
// opens for concurrent calls.
package burst

import (
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Server serves h on loopback, holding each call until n calls have
// arrived (or 5 s passed), so that a round of n concurrent calls needs n
// connections at once. Opened counts the connections it accepted.
type Server struct {
	*httptest.Server
	Opened atomic.Int32
}

// Start starts a Server, closed when the test ends.
func Start(t testing.TB, h http.Handler, n int) *Server {
	s := &Server{}
	var mu sync.Mutex
	arrived, gate := 0, make(chan struct{})
	together := func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		g := gate
		if arrived++; arrived%n == 0 {
			close(gate)
			gate = make(chan struct{})
		}
		mu.Unlock()
		select {
		case <-g:
		case <-time.After(5 * time.Second):
		}
		h.ServeHTTP(w, r)
	}
	s.Server = httptest.NewUnstartedServer(http.HandlerFunc(together))
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			s.Opened.Add(1)
		}
	}
	s.Start()
	t.Cleanup(s.Close)
	return s
}

// Rounds makes two rounds of n concurrent calls and reports the
// connections the first opened and those the second opened besides.
func (s *Server) Rounds(n int, call func(i int)) (first, again int32) {
	round := func() {
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() { call(i) })
		}
		wg.Wait()
	}
	round()
	first = s.Opened.Load()
	round()
	return first, s.Opened.Load() - first
}
