package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"paygateway/gateway"
)

// routeCallers says who may call each route of a fully wired gateway:
// API-key roles, a user JWT ("jwt"), WeChat Pay's signature ("wechat"),
// or anyone ("public"). Keyed routes not listed take a finance or ops key.
var routeCallers = map[string][]string{
	"post /v1/orders":                                 {"service"},
	"get /v1/ops/outbox/dead":                         {"ops"},
	"post /v1/ops/outbox/{id}/replay":                 {"ops"},
	"get /v1/ledger/audit":                            {"ops"},
	"get /metrics":                                    {"metrics", "ops"},
	"post /v1/refunds":                                {"jwt"},
	"get /v1/refunds/{out_refund_no}":                 {"jwt"},
	"post /v1/wechatpay/notify/payment":               {"wechat"},
	"post /v1/wechatpay/notify/refund":                {"wechat"},
	"get /healthz":                                    {"public"},
	"get /readyz":                                     {"public"},
	"head /healthz":                                   {"public"},
	"head /readyz":                                    {"public"},
	"get /openapi.json":                               {"public"},
	"get /v1/ledger/payments/{out_trade_no}":          nil, // nil: finance or ops
	"post /v1/ledger/anomalies/{id}/resolve":          nil,
	"get /v1/reconciliations/{date}":                  nil,
	"post /v1/reconciliations":                        nil,
	"get /v1/ledger/payments":                         nil,
	"get /v1/ledger/refunds":                          nil,
	"get /v1/ledger/notifications":                    nil,
	"get /v1/ledger/outbox-jobs":                      nil,
	"get /v1/ledger/anomalies":                        nil,
	"get /v1/ledger/totals":                           nil,
	"get /v1/ledger/payments/{out_trade_no}/timeline": nil,
}

// TestEveryRouteChecksWhoCalls: every route of a fully wired gateway is
// classified above (a new route must be, consciously), and each refuses a
// caller without credentials (401), a key of a role it does not serve
// (403, never served), and, for the user routes, an API key or a token
// signed with another secret (401), while it serves the roles it names
// and a valid user token. The OpenAPI document declares the
// same scheme. A login check that lets anyone in fails here.
func TestEveryRouteChecksWhoCalls(t *testing.T) {
	e := startRefundEnv(t, backends[0], nil)
	keys := map[string]string{"service": serviceKey, "finance": financeKey, "ops": opsKey, "metrics": metricsKey}
	schemes := documentedSchemes(t)
	forged, err := gateway.SignDevToken([]byte("not-the-secret-not-the-secret-32"), "o-anyone", "", jwtAudience, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for _, rt := range gateway.NewRouter(*e.m.Deps).Routes() {
		route := strings.ToLower(rt.Method) + " " + ginParam.ReplaceAllString(rt.Path, "{$1}")
		callers, ok := routeCallers[route]
		if !ok {
			t.Errorf("%s: not in routeCallers; say who may call it", route)
			continue
		}
		url := e.m.URL() + concretePath(rt.Path)
		switch {
		case slices.Contains(callers, "public"):
			checkScheme(t, route, schemes, "")
		case slices.Contains(callers, "wechat"):
			checkScheme(t, route, schemes, "")
			expectStatus(t, route+" unsigned", callRoute(t, rt.Method, url, nil), 401)
		case slices.Contains(callers, "jwt"):
			checkScheme(t, route, schemes, "BearerJWT")
			expectStatus(t, route+" anonymous", callRoute(t, rt.Method, url, nil), 401)
			expectStatus(t, route+" with an ops key", callRoute(t, rt.Method, url, map[string]string{"X-Api-Key": opsKey}), 401)
			expectStatus(t, route+" with a forged token", callRoute(t, rt.Method, url,
				map[string]string{"Authorization": "Bearer " + forged}), 401)
			if status := callRoute(t, rt.Method, url, map[string]string{"Authorization": "Bearer " + token(t, "o-anyone")}); status == 401 || status == 403 {
				t.Errorf("%s with a valid token: %d, want it served", route, status)
			}
		default:
			checkScheme(t, route, schemes, "ApiKey")
			checkKeyed(t, route, rt.Method, url, orFinanceOps(callers), keys)
		}
	}
}

// checkKeyed calls a keyed route anonymously (401) and with each role's
// key: 403 for a role it does not serve, anything but 401/403 for one
// it does.
func checkKeyed(t *testing.T, route, method, url string, allowed []string, keys map[string]string) {
	t.Helper()
	expectStatus(t, route+" anonymous", callRoute(t, method, url, nil), 401)
	for role, key := range keys {
		status := callRoute(t, method, url, map[string]string{"X-Api-Key": key})
		switch {
		case !slices.Contains(allowed, role) && status != 403:
			t.Errorf("%s with a %s key: %d, want 403", route, role, status)
		case slices.Contains(allowed, role) && (status == 401 || status == 403):
			t.Errorf("%s with a %s key: %d, want it served", route, role, status)
		}
	}
}

func orFinanceOps(callers []string) []string {
	if callers == nil {
		return []string{"finance", "ops"}
	}
	return callers
}

func expectStatus(t *testing.T, what string, got, want int) {
	t.Helper()
	if got != want {
		t.Errorf("%s: %d, want %d", what, got, want)
	}
}

// concretePath fills a route's parameters with well-formed values.
func concretePath(path string) string {
	r := strings.NewReplacer(":id", "1", ":out_trade_no", "no-such-order", ":out_refund_no", "no-such-refund",
		":date", "2020-01-01")
	return r.Replace(path)
}

// callRoute sends an empty JSON object (POST) or nothing (GET) with
// headers and returns the status.
func callRoute(t *testing.T, method, url string, headers map[string]string) int {
	t.Helper()
	var body *bytes.Reader
	if method == http.MethodPost {
		body = bytes.NewReader([]byte("{}"))
	} else {
		body = bytes.NewReader(nil)
	}
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// documentedSchemes maps "method path" to the security scheme the
// OpenAPI document names for it ("" for none).
func documentedSchemes(t *testing.T) map[string]string {
	t.Helper()
	var doc struct {
		Paths map[string]map[string]struct {
			Security []map[string][]string `json:"security"`
		} `json:"paths"`
	}
	if err := json.Unmarshal(gateway.OpenAPIDocument, &doc); err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	out := map[string]string{}
	for path, ops := range doc.Paths {
		for method, op := range ops {
			scheme := ""
			for _, s := range op.Security {
				for name := range s {
					scheme = name
				}
			}
			out[method+" "+path] = scheme
		}
	}
	return out
}

func checkScheme(t *testing.T, route string, schemes map[string]string, want string) {
	t.Helper()
	if got, ok := schemes[route]; !ok || got != want {
		t.Errorf("%s: openapi.json security %q (documented %v), want %q", route, got, ok, want)
	}
}
