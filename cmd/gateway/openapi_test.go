package main

import (
	"encoding/json"
	"regexp"
	"sort"
	"strings"
	"testing"

	"paygateway/gateway"
)

var ginParam = regexp.MustCompile(`:([A-Za-z_]+)`)

// TestOpenAPIMatchesRoutes: every route of a fully wired gateway (refunds,
// outbox, finance on) is in /openapi.json, and every documented operation
// is a route.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	e := startRefundEnv(t, backends[0], nil)
	routes := map[string]bool{}
	for _, rt := range gateway.NewRouter(*e.m.Deps).Routes() {
		routes[strings.ToLower(rt.Method)+" "+ginParam.ReplaceAllString(rt.Path, "{$1}")] = true
	}
	var doc struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(gateway.OpenAPIDocument, &doc); err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	documented := map[string]bool{}
	for path, ops := range doc.Paths {
		for method := range ops {
			documented[method+" "+path] = true
		}
	}
	var missing, extra []string
	for k := range routes {
		if !documented[k] {
			missing = append(missing, k)
		}
	}
	for k := range documented {
		if !routes[k] {
			extra = append(extra, k)
		}
	}
	sort.Strings(missing)
	sort.Strings(extra)
	if len(missing)+len(extra) > 0 {
		t.Fatalf("openapi.json out of sync with the router:\nundocumented routes: %v\ndocumented but not routed: %v", missing, extra)
	}
	if len(routes) < 15 {
		t.Fatalf("only %d routes: wiring looks incomplete", len(routes))
	}
}
