package gateway

import (
	"errors"
	"slices"
	"testing"
)

// TestIfMatch: the replay's If-Match as RFC 9110 reads it — * is any
// version, a list matches if any strong tag does, a weak tag matches none
// (so weak tags alone are an empty list: 412), and a missing header is 428.
func TestIfMatch(t *testing.T) {
	cases := []struct {
		name  string
		lines []string
		want  []string // nil: any version
		code  string   // the error's code, if any
	}{
		{"none", nil, nil, CodePreconditionRequired},
		{"blank", []string{"  "}, nil, CodePreconditionRequired},
		{"any", []string{"*"}, nil, ""},
		{"one quoted", []string{`"12"`}, []string{"12"}, ""},
		{"one bare", []string{"12"}, []string{"12"}, ""},
		{"weak only", []string{`W/"12"`}, []string{}, ""},
		{"a list", []string{`"1", W/"2" ,"3"`}, []string{"1", "3"}, ""},
		{"two lines", []string{`"1"`, `"2"`}, []string{"1", "2"}, ""},
		{"empty elements", []string{`, "5",`}, []string{"5"}, ""},
		{"commas only", []string{","}, nil, CodeInvalid},
		{"weak unquoted", []string{"W/12"}, nil, CodeInvalid},
		{"not a version", []string{`"1x"`}, nil, CodeInvalid},
		{"empty tag", []string{`""`}, nil, CodeInvalid},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ifMatch(tc.lines)
			var e *Error
			switch {
			case tc.code != "" && (!errors.As(err, &e) || e.Code != tc.code):
				t.Fatalf("ifMatch(%q) = %q, %v; want error %s", tc.lines, got, err, tc.code)
			case tc.code == "" && err != nil:
				t.Fatalf("ifMatch(%q): %v", tc.lines, err)
			case tc.code == "" && (!slices.Equal(got, tc.want) || (got == nil) != (tc.want == nil)):
				t.Fatalf("ifMatch(%q) = %#v, want %#v", tc.lines, got, tc.want)
			}
		})
	}
}
