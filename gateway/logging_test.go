package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"

	"github.com/gin-gonic/gin"
)

// syncBuffer is a log sink safe for concurrent handlers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// captureLogs sends the default slog logger to a buffer for the test.
func captureLogs(t *testing.T) *syncBuffer {
	t.Helper()
	buf := &syncBuffer{}
	old := slog.Default()
	slog.SetDefault(slog.New(NewLogHandler(slog.NewJSONHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))))
	t.Cleanup(func() { slog.SetDefault(old) })
	return buf
}

// logLines decodes the JSON log lines whose msg is msg.
func logLines(t *testing.T, out, msg string) []map[string]any {
	t.Helper()
	var lines []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line is not JSON: %q", l)
		}
		if m["msg"] == msg {
			lines = append(lines, m)
		}
	}
	return lines
}

func testRouter(routes ...func(r *gin.Engine, d *Deps)) *gin.Engine {
	gin.SetMode(gin.TestMode)
	return NewRouter(Deps{Metrics: NewMetrics(), Routes: routes})
}

func TestPanicAnswers500JSONAndIsLogged(t *testing.T) {
	logs := captureLogs(t)
	r := testRouter(func(r *gin.Engine, _ *Deps) {
		r.GET("/boom", func(*gin.Context) { panic("kaboom") })
	})
	req := httptest.NewRequest("GET", "/boom", nil)
	req.Header.Set("X-Request-Id", "req-panic-1")
	w := httptest.NewRecorder()
	r.ServeHTTP(w, req)
	var body map[string]string
	_ = json.Unmarshal(w.Body.Bytes(), &body)
	if w.Code != http.StatusInternalServerError || body["code"] != CodeInternal || body["message"] != "internal error" {
		t.Fatalf("status=%d body=%s, want 500 EINTERNAL", w.Code, w.Body)
	}
	panics := logLines(t, logs.String(), "panic")
	if len(panics) != 1 || panics[0]["request_id"] != "req-panic-1" || panics[0]["panic"] != "kaboom" ||
		!strings.Contains(fmt.Sprint(panics[0]["stack"]), "logging_test.go") {
		t.Fatalf("panic log lines = %v, want one with the request id and the stack", panics)
	}
	access := logLines(t, logs.String(), "http request")
	if len(access) != 1 || access[0]["status"] != float64(500) || access[0]["route"] != "/boom" || access[0]["code"] != CodeInternal {
		t.Fatalf("access log = %v, want one 500 EINTERNAL line for /boom", access)
	}
}

// TestPanicOnANotificationRouteAnswersFail: WeChat Pay's routes answer a
// panic as they answer every failure, {"code":"FAIL"} with our code in
// "reason", so WeChat Pay redelivers and its logs read as its protocol says.
func TestPanicOnANotificationRouteAnswersFail(t *testing.T) {
	captureLogs(t)
	r := testRouter(func(r *gin.Engine, _ *Deps) {
		r.POST(notifyPrefix+"boom", func(*gin.Context) { panic("kaboom") })
	})
	w := httptest.NewRecorder()
	r.ServeHTTP(w, httptest.NewRequest("POST", notifyPrefix+"boom", strings.NewReader("{}")))
	var body map[string]string
	_ = json.Unmarshal(w.Body.Bytes(), &body)
	if w.Code != http.StatusInternalServerError || body["code"] != "FAIL" || body["reason"] != CodeInternal {
		t.Fatalf("status=%d body=%s, want 500 FAIL with reason EINTERNAL", w.Code, w.Body)
	}
}

// TestPanicMidAnswerCutsTheConnection: a handler that panics after part
// of its answer went out (an export failing midway) cannot be answered
// 500; the connection is cut, so the client sees a broken answer, not a
// 200 that looks whole, and the request is still counted and logged, as
// "aborted". An export the handler itself aborts (http.ErrAbortHandler)
// is counted and logged the same way.
func TestPanicMidAnswerCutsTheConnection(t *testing.T) {
	logs := captureLogs(t)
	r := testRouter(func(r *gin.Engine, _ *Deps) {
		r.GET("/half", func(c *gin.Context) {
			c.String(http.StatusOK, "a,b\n1,2\n")
			c.Writer.Flush()
			panic("kaboom")
		})
		r.GET("/abort", func(c *gin.Context) {
			c.String(http.StatusOK, "a,b\n")
			c.Writer.Flush()
			panic(http.ErrAbortHandler)
		})
	})
	srv := httptest.NewServer(r)
	defer srv.Close()
	for _, path := range []string{"/half", "/abort"} {
		resp, err := http.Get(srv.URL + path)
		if err == nil {
			_, err = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		if err == nil {
			t.Fatalf("%s: the answer came whole after a panic midway", path)
		}
	}
	w := httptest.NewRecorder()
	r.ServeHTTP(w, httptest.NewRequest("GET", "/metrics", nil))
	for _, want := range []string{`gateway_http_requests_total{code="aborted",method="GET",route="/half"} 1`,
		`gateway_http_requests_total{code="aborted",method="GET",route="/abort"} 1`} {
		if !strings.Contains(w.Body.String(), want) {
			t.Fatalf("metrics lack %s:\n%s", want, w.Body)
		}
	}
	cut := 0
	for _, line := range logLines(t, logs.String(), "http request") {
		if line["route"] == "/half" || line["route"] == "/abort" {
			if line["aborted"] != true {
				t.Fatalf("access line of a cut-off request lacks aborted: %v", line)
			}
			cut++
		}
	}
	if cut != 2 {
		t.Fatalf("%d access lines of the cut-off requests, want 2", cut)
	}
}

func TestHandlerLogsCarryRequestID(t *testing.T) {
	logs := captureLogs(t)
	r := testRouter(func(r *gin.Engine, _ *Deps) {
		r.GET("/hello", func(c *gin.Context) {
			slog.InfoContext(c.Request.Context(), "inside handler", "out_trade_no", "T1")
			c.Status(http.StatusNoContent)
		})
	})
	req := httptest.NewRequest("GET", "/hello?secret=x", nil)
	req.Header.Set("X-Request-Id", "req-42")
	w := httptest.NewRecorder()
	r.ServeHTTP(w, req)
	if w.Header().Get("X-Request-Id") != "req-42" {
		t.Fatalf("X-Request-Id=%q, want req-42", w.Header().Get("X-Request-Id"))
	}
	for _, msg := range []string{"inside handler", "http request"} {
		lines := logLines(t, logs.String(), msg)
		if len(lines) != 1 || lines[0]["request_id"] != "req-42" {
			t.Fatalf("%q lines = %v, want one with request_id req-42", msg, lines)
		}
	}
	if strings.Contains(logs.String(), "secret=x") {
		t.Fatalf("the query string was logged: %s", logs)
	}
}

func TestMetricsCountRoutesByTemplate(t *testing.T) {
	m := NewMetrics()
	gin.SetMode(gin.TestMode)
	r := NewRouter(Deps{Metrics: m, Routes: []func(*gin.Engine, *Deps){func(r *gin.Engine, _ *Deps) {
		r.GET("/items/:id", func(c *gin.Context) { c.Status(http.StatusOK) })
	}}})
	for _, p := range []string{"/items/1", "/items/2", "/nowhere"} {
		r.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", p, nil))
	}
	for i := range 3 { // made-up methods: one series, not one each
		r.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(fmt.Sprintf("FOO%d", i), "/items/1", nil))
	}
	w := httptest.NewRecorder()
	r.ServeHTTP(w, httptest.NewRequest("GET", "/metrics", nil))
	for _, want := range []string{
		`gateway_http_requests_total{code="200",method="GET",route="/items/:id"} 2`,
		`gateway_http_requests_total{code="404",method="GET",route="unmatched"} 1`,
		`gateway_http_requests_total{code="404",method="OTHER",route="unmatched"} 3`,
	} {
		if !strings.Contains(w.Body.String(), want) {
			t.Fatalf("metrics lack %s:\n%s", want, w.Body)
		}
	}
}

// TestCallerRequestIDsAreChecked: a caller's X-Request-Id is kept only if
// it is 1-64 plain characters; anything else (spaces, quotes, bytes that
// are not UTF-8, too long) is replaced by a fresh id.
func TestCallerRequestIDsAreChecked(t *testing.T) {
	r := testRouter(func(r *gin.Engine, _ *Deps) {
		r.GET("/hello", func(c *gin.Context) { c.Status(http.StatusNoContent) })
	})
	for in, kept := range map[string]bool{"req-42": true, "a.b_c:d-9": true, `a b"`: false, "bad\xff": false,
		strings.Repeat("x", 65): false} {
		req := httptest.NewRequest("GET", "/hello", nil)
		req.Header.Set("X-Request-Id", in)
		w := httptest.NewRecorder()
		r.ServeHTTP(w, req)
		got := w.Header().Get("X-Request-Id")
		if (got == in) != kept || got == "" || !validRequestID(got) {
			t.Fatalf("X-Request-Id %q answered %q; kept %v, want %v", in, got, got == in, kept)
		}
	}
}

// TestLoggedErrorsAreCapped: an error quoting caller-sent text (say a
// 100 KB header) is cut in the log line.
func TestLoggedErrorsAreCapped(t *testing.T) {
	logs := captureLogs(t)
	r := testRouter(func(r *gin.Engine, _ *Deps) {
		r.GET("/bad", func(c *gin.Context) {
			writeError(c, Errorf(CodeInvalid, "bad header", errors.New(strings.Repeat("库", 40000))))
		})
	})
	r.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/bad", nil))
	lines := logLines(t, logs.String(), "request failed")
	if len(lines) != 1 {
		t.Fatalf("request failed lines: %v", lines)
	}
	if msg, _ := lines[0]["err"].(string); len(msg) > maxLoggedError+8 || !utf8.ValidString(msg) {
		t.Fatalf("logged error of %d bytes (valid UTF-8 %v), want at most ~%d", len(msg), utf8.ValidString(msg), maxLoggedError)
	}
}

// TestTrailingSlashIsNotRedirected: a path with a stray trailing slash is
// an unknown route answered like any other (404 JSON with a code and a
// request id), not a redirect gin would send before any middleware.
func TestTrailingSlashIsNotRedirected(t *testing.T) {
	r := testRouter(func(r *gin.Engine, _ *Deps) {
		r.POST("/v1/things", func(c *gin.Context) { c.Status(http.StatusNoContent) })
		r.GET("/v1/list", func(c *gin.Context) { c.Status(http.StatusNoContent) })
	})
	for _, tc := range []struct{ method, path string }{{"POST", "/v1/things/"}, {"GET", "/v1/list/"}} {
		w := httptest.NewRecorder()
		r.ServeHTTP(w, httptest.NewRequest(tc.method, tc.path, nil))
		var body map[string]string
		_ = json.Unmarshal(w.Body.Bytes(), &body)
		if w.Code != http.StatusNotFound || body["code"] != CodeNotFound || w.Header().Get("X-Request-Id") == "" {
			t.Errorf("%s %s: status=%d body=%s location=%q, want 404 JSON", tc.method, tc.path, w.Code, w.Body, w.Header().Get("Location"))
		}
	}
}

// TestPanicOnAChunkedRequestStillClosesTheConnection: the 500 answering a
// handler's panic keeps the Connection: close of a request framed by
// chunks (see closeAfterRiskyFraming), though it drops the handler's other
// headers: open, the connection would serve the bytes a proxy in front
// took for the body as a request of their own.
func TestPanicOnAChunkedRequestStillClosesTheConnection(t *testing.T) {
	captureLogs(t)
	r := testRouter(func(r *gin.Engine, _ *Deps) {
		r.POST("/boom", func(*gin.Context) { panic("kaboom") })
	})
	srv := httptest.NewServer(r)
	defer srv.Close()
	req, err := http.NewRequest("POST", srv.URL+"/boom", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength, req.TransferEncoding = -1, []string{"chunked"}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusInternalServerError || !resp.Close {
		t.Fatalf("status %d, Connection: close %t; want 500 and the connection closed", resp.StatusCode, resp.Close)
	}
}

// TestPanicBeforeTheAnswerDropsItsHeaders: a handler that set the headers
// of its answer (an export's CSV type and attachment name) and panicked
// before any of it went out is answered 500 JSON as JSON, not as a CSV
// download holding the error; the request id stays.
func TestPanicBeforeTheAnswerDropsItsHeaders(t *testing.T) {
	captureLogs(t)
	r := testRouter(func(r *gin.Engine, _ *Deps) {
		r.GET("/export", func(c *gin.Context) {
			startCSV(c, "payments.csv", []string{"a", "b"}) // buffered: nothing written yet
			panic("kaboom")
		})
	})
	req := httptest.NewRequest("GET", "/export", nil)
	req.Header.Set("X-Request-Id", "req-export-1")
	w := httptest.NewRecorder()
	r.ServeHTTP(w, req)
	var body map[string]string
	if w.Code != http.StatusInternalServerError || json.Unmarshal(w.Body.Bytes(), &body) != nil || body["code"] != CodeInternal {
		t.Fatalf("status=%d body=%s, want 500 EINTERNAL", w.Code, w.Body)
	}
	if ct := w.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("Content-Type %q, want application/json", ct)
	}
	if cd := w.Header().Get("Content-Disposition"); cd != "" {
		t.Errorf("Content-Disposition %q on the error answer", cd)
	}
	if id := w.Header().Get("X-Request-Id"); id != "req-export-1" {
		t.Errorf("X-Request-Id %q, want req-export-1", id)
	}
}
