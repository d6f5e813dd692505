package gateway

import (
	"bufio"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
)

// csvStream writes rows to the client as they come: nothing is built in
// memory, and the buffer is flushed every flushEvery rows.
type csvStream struct {
	c    *gin.Context
	w    *bufio.Writer
	rows int
}

const flushEvery = 200

func startCSV(c *gin.Context, filename string, header []string) *csvStream {
	c.Header("Content-Type", "text/csv; charset=utf-8")
	c.Header("Content-Disposition", `attachment; filename="`+filename+`"`)
	c.Status(http.StatusOK)
	s := &csvStream{c: c, w: bufio.NewWriter(c.Writer)}
	writeRecord(s.w, header)
	return s
}

func (s *csvStream) write(row []string) error {
	writeRecord(s.w, row)
	s.rows++
	if s.rows%flushEvery == 0 {
		if err := s.w.Flush(); err != nil {
			return err
		}
		s.c.Writer.Flush()
	}
	return nil
}

func (s *csvStream) finish() error {
	err := s.w.Flush()
	s.c.Writer.Flush()
	return err
}

// writeRecord writes one RFC 4180 record. Unlike encoding/csv it also
// quotes a field holding ';' or a tab: a spreadsheet whose list separator
// is ';' (German, French, Russian locales) would otherwise split the field
// there, and a formula could start in the cell after it. Errors stay in
// w (bufio keeps the first) and come out of its Flush.
func writeRecord(w *bufio.Writer, fields []string) {
	for i, f := range fields {
		if i > 0 {
			_ = w.WriteByte(',')
		}
		if f == "" || !strings.ContainsAny(f, ",;\"\t\r\n") && f[0] != ' ' && f[len(f)-1] != ' ' {
			_, _ = w.WriteString(f)
			continue
		}
		_ = w.WriteByte('"')
		_, _ = w.WriteString(strings.ReplaceAll(f, `"`, `""`))
		_ = w.WriteByte('"')
	}
	_, _ = w.WriteString("\n")
}

// cell makes a text value safe for spreadsheets: a leading = + - @ or
// control character would be read as a formula, so it gets a quote. So
// does one that starts a piece after a ';' or a line break (spaces and
// double quotes skipped): a spreadsheet whose list separator is ';'
// splits the line there, quotes or not, since its field began at the last
// ';' and the quote stands in the middle of it, and a line break then
// starts a row; a piece `""=…` (a quote in the text, doubled) is read as
// an empty quoted string followed by the formula.
func cell(s string) string {
	var b strings.Builder
	start := 0
	for i := 0; i < len(s); i++ {
		if i > 0 && s[i-1] != ';' && s[i-1] != '\n' && s[i-1] != '\r' || !opensFormula(s[i:]) {
			continue
		}
		j := len(s) - len(strings.TrimLeft(s[i:], formulaLead)) // the formula's first character
		b.WriteString(s[start:j])
		b.WriteByte('\'')
		start = j
	}
	if b.Len() == 0 { // nothing quoted
		return s
	}
	b.WriteString(s[start:])
	return b.String()
}

// formulaLead is what may stand before a formula's first character.
const formulaLead = ` "`

// opensFormula tells whether a cell starting with s (spaces and quotes
// skipped) would be read as a formula.
func opensFormula(s string) bool {
	s = strings.TrimLeft(s, formulaLead)
	return s != "" && strings.IndexByte("=+-@\t\r", s[0]) >= 0
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
