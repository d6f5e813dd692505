package gateway_test

import (
	"encoding/json"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/gin-gonic/gin"

	"paygateway/gateway"
)

var ginParam = regexp.MustCompile(`:([A-Za-z_]+)`)

// TestOpenAPIMatchesRoutes: every public route is in the document and
// every documented operation is a route.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	gin.SetMode(gin.TestMode)
	fin := &gateway.Finance{}
	r := gateway.NewRouter(gateway.Deps{Auth: gateway.NewAuth(), Routes: []func(*gin.Engine, *gateway.Deps){fin.Routes}})
	routes := map[string]bool{}
	for _, rt := range r.Routes() {
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
}
