package gateway

import (
	"encoding/csv"
	"net/http"
	"strconv"
	"time"

	"github.com/gin-gonic/gin"
)

// csvStream writes rows to the client as they come: nothing is built in
// memory, and the buffer is flushed every flushEvery rows.
type csvStream struct {
	c    *gin.Context
	w    *csv.Writer
	rows int
}

const flushEvery = 200

func startCSV(c *gin.Context, filename string, header []string) *csvStream {
	c.Header("Content-Type", "text/csv; charset=utf-8")
	c.Header("Content-Disposition", `attachment; filename="`+filename+`"`)
	c.Status(http.StatusOK)
	s := &csvStream{c: c, w: csv.NewWriter(c.Writer)}
	_ = s.w.Write(header)
	return s
}

func (s *csvStream) write(row []string) error {
	if err := s.w.Write(row); err != nil {
		return err
	}
	s.rows++
	if s.rows%flushEvery == 0 {
		s.w.Flush()
		if err := s.w.Error(); err != nil {
			return err
		}
		s.c.Writer.Flush()
	}
	return nil
}

func (s *csvStream) finish() error {
	s.w.Flush()
	s.c.Writer.Flush()
	return s.w.Error()
}

// cell makes a text value safe for spreadsheets: a leading = + - @ or
// control character would be read as a formula, so it gets a quote.
func cell(s string) string {
	if s != "" && (s[0] == '=' || s[0] == '+' || s[0] == '-' || s[0] == '@' || s[0] == '\t' || s[0] == '\r') {
		return "'" + s
	}
	return s
}

func num(n int64) string { return strconv.FormatInt(n, 10) }

// csvTime is RFC 3339 in UTC with microseconds always written: one width
// for every row, so the column sorts as text in a spreadsheet (RFC3339Nano
// drops trailing zeros, and "…:00Z" sorts after "…:00.5Z").
const csvTime = "2006-01-02T15:04:05.000000Z07:00"

func ts(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(csvTime)
}

func tsp(t *time.Time) string {
	if t == nil {
		return ""
	}
	return ts(*t)
}
