package gateway

import (
	"encoding/json"
	"slices"
	"testing"
)

// TestOpenAPIListsEveryErrorCode: the error codes /openapi.json tells
// clients they may branch on (an API error's code, a refused
// notification's reason) are the codes the gateway answers with: a code
// added without its documentation, or documented but gone, fails.
func TestOpenAPIListsEveryErrorCode(t *testing.T) {
	var doc struct {
		Components struct {
			Schemas map[string]struct {
				Properties map[string]struct {
					Enum []string `json:"enum"`
				} `json:"properties"`
			} `json:"schemas"`
		} `json:"components"`
	}
	if err := json.Unmarshal(OpenAPIDocument, &doc); err != nil {
		t.Fatal(err)
	}
	var codes []string
	for code := range statusByCode {
		codes = append(codes, code)
	}
	slices.Sort(codes)
	for _, field := range []struct{ schema, property string }{{"Error", "code"}, {"WechatFail", "reason"}} {
		documented := slices.Sorted(slices.Values(doc.Components.Schemas[field.schema].Properties[field.property].Enum))
		if !slices.Equal(documented, codes) {
			t.Errorf("openapi.json %s.%s lists %v; the gateway answers with %v", field.schema, field.property, documented, codes)
		}
	}
}
