package ledgerdb_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestWeChatPayTestsDoNotLinkSQLite: the WeChat Pay client's test binary,
// which `make fuzz-short` builds instrumented from a cold cache on every CI
// run, links no SQLite engine (minutes of instrumented build). A test
// helper imported from ledgertest rather than daytest once brought it in.
func TestWeChatPayTestsDoNotLinkSQLite(t *testing.T) {
	for _, pkg := range []string{"paygateway/gateway/wechatpay", "paygateway/gateway/wechatpay/wxpaysim"} {
		out, err := exec.Command("go", "list", "-test", "-deps", pkg).CombinedOutput()
		if err != nil {
			t.Fatalf("go list %s: %v\n%s", pkg, err, out)
		}
		for _, dep := range strings.Fields(string(out)) {
			if strings.Contains(dep, "sqlite") {
				t.Errorf("%s's tests link %s", pkg, dep)
			}
		}
	}
}
