package wechatpay

import (
	"errors"
	"net/http"
	"testing"

	"github.com/wechatpay-apiv3/wechatpay-go/core"
)

// TestClassifyAPIError: a retry code is no verdict whatever its status;
// other 4xx are refusals and 5xx/429 unknown; 429 and FREQUENCY_LIMITED
// are rate limits too.
func TestClassifyAPIError(t *testing.T) {
	cases := []struct {
		status  int
		code    string
		unknown bool
		limited bool
	}{
		{403, "NOT_ENOUGH", false, false},
		{400, "INVALID_REQUEST", false, false},
		{400, "SYSTEM_ERROR", true, false},
		{403, "FREQUENCY_LIMITED", true, true},
		{400, "BIZ_ERR_NEED_RETRY", true, false},
		{429, "FREQUENCY_LIMITED", true, true},
		{429, "", true, true},
		{500, "SYSTEM_ERROR", true, false},
	}
	for _, tc := range cases {
		err := classifyAPIError(&core.APIError{StatusCode: tc.status, Code: tc.code, Header: http.Header{}})
		var be *BusinessError
		if IsUnknownOutcome(err) != tc.unknown || errors.As(err, &be) == tc.unknown || errors.Is(err, ErrRateLimited) != tc.limited {
			t.Errorf("%d %s: err=%v, want unknown=%t", tc.status, tc.code, err, tc.unknown)
		}
	}
}
