package wechatpay

import (
	"errors"
	"net/http"
	"testing"

	"github.com/wechatpay-apiv3/wechatpay-go/core"
)

// TestClassifyAPIError: a retry code is no verdict whatever its status;
// other 4xx are refusals and 5xx/429 unknown.
func TestClassifyAPIError(t *testing.T) {
	cases := []struct {
		status  int
		code    string
		unknown bool
	}{
		{403, "NOT_ENOUGH", false},
		{400, "INVALID_REQUEST", false},
		{400, "SYSTEM_ERROR", true},
		{403, "FREQUENCY_LIMITED", true},
		{400, "BIZ_ERR_NEED_RETRY", true},
		{429, "FREQUENCY_LIMITED", true},
		{500, "SYSTEM_ERROR", true},
	}
	for _, tc := range cases {
		err := classifyAPIError(&core.APIError{StatusCode: tc.status, Code: tc.code, Header: http.Header{}})
		var be *BusinessError
		if IsUnknownOutcome(err) != tc.unknown || errors.As(err, &be) == tc.unknown {
			t.Errorf("%d %s: err=%v, want unknown=%t", tc.status, tc.code, err, tc.unknown)
		}
	}
}
