package gateway

import (
	"errors"
	"net/http"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/gin-gonic/gin"

	"paygateway/ledger"
)

// resolveRequest is the body of POST /v1/ledger/anomalies/{id}/resolve.
type resolveRequest struct {
	Resolution string `json:"resolution"`
}

// resolveAnomaly marks an open anomaly resolved by the caller, with what
// was done about it; the anomaly leaves gateway_anomalies_open.
func (d *Deps) resolveAnomaly(c *gin.Context) {
	// 63 bits: ids are signed in the databases, and SQLite's driver
	// refuses a larger uint64 (a 503 for bad input).
	id, err := strconv.ParseUint(c.Param("id"), 10, 63)
	if err != nil || id == 0 {
		writeError(c, &Error{Code: CodeInvalid, Message: "id must be a positive integer"})
		return
	}
	var req resolveRequest
	if err := DecodeJSON(c, d.MaxBodyBytes, &req); err != nil {
		writeError(c, err)
		return
	}
	note := strings.TrimSpace(req.Resolution)
	if note == "" || len(note) > ledger.MaxResolutionBytes || !utf8.ValidString(note) {
		writeError(c, &Error{Code: CodeInvalid, Message: "resolution must be 1-512 bytes of UTF-8 text saying what was done"})
		return
	}
	p := CurrentPrincipal(c)
	a, err := d.Store.ResolveAnomaly(c.Request.Context(), id, string(p.Role)+":"+p.Name, note)
	switch {
	case err == nil:
		c.JSON(http.StatusOK, gin.H{"anomaly": a})
	case errors.Is(err, ledger.ErrConflict):
		writeError(c, Errorf(CodeConflict, "anomaly is already resolved (by "+a.ResolvedBy+")", err))
	default:
		writeError(c, ledgerError(err))
	}
}
