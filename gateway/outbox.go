package gateway

import (
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/gin-gonic/gin"

	"paygateway/ledger"
)

// OutboxRoutes adds the operator endpoints for dead-lettered jobs (role
// ops): list them with their attempt history, and replay one. They share
// the caller's ledger rate limit with the finance reads.
func OutboxRoutes(r *gin.Engine, d *Deps) {
	ops := r.Group("/v1/ops/outbox", timeout(d.APITimeout))
	ops.Use(d.keyed("ledger", d.Limits.Ledger, true, RoleOps)...)
	ops.GET("/dead", d.listDeadJobs)
	ops.POST("/:id/replay", d.replayJob)
}

// maxDeadListed caps one listing; operators replay and list again.
const maxDeadListed = 500

func (d *Deps) listDeadJobs(c *gin.Context) {
	limit := maxDeadListed
	if s := c.Query("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 || n > maxDeadListed {
			writeError(c, &Error{Code: CodeInvalid, Message: "limit must be 1-500"})
			return
		}
		limit = n
	}
	jobs, err := d.Store.Outbox().DeadJobs(c.Request.Context(), limit)
	if err != nil {
		writeError(c, ledgerError(err))
		return
	}
	c.JSON(http.StatusOK, gin.H{"jobs": jobs})
}

func (d *Deps) replayJob(c *gin.Context) {
	id, err := strconv.ParseUint(c.Param("id"), 10, 63) // ids fit a signed 64-bit column
	if err != nil || id == 0 {
		writeError(c, &Error{Code: CodeInvalid, Message: "id must be a positive integer"})
		return
	}
	versions, perr := ifMatch(c.Request.Header.Values("If-Match"))
	if perr != nil {
		// A job that does not exist is 404 however it was asked for.
		if _, err := d.Store.Outbox().Job(c.Request.Context(), id); errors.Is(err, ledger.ErrNotFound) {
			perr = ledgerError(err)
		}
		writeError(c, perr)
		return
	}
	job, err := d.Store.Outbox().ReplayIf(c.Request.Context(), id, "ops:"+CurrentPrincipal(c).Name, versions)
	if job != nil {
		c.Header("ETag", `"`+job.Version+`"`)
	}
	switch {
	case err == nil:
		c.JSON(http.StatusOK, gin.H{"job": job})
	case errors.Is(err, ledger.ErrStale):
		writeError(c, Errorf(CodePreconditionFailed, "the job is not at the version If-Match names (now "+job.Version+
			", last error: "+job.LastError+"): look at it again before replaying", err))
	case errors.Is(err, ledger.ErrReleaseWaits):
		writeError(c, Errorf(CodeConflict, "this release waits for its order's confirmation: replay that job first", err))
	case errors.Is(err, ledger.ErrConflict):
		writeError(c, Errorf(CodeConflict, "job is "+job.State+", only DEAD jobs can be replayed", err))
	default:
		writeError(c, ledgerError(err))
	}
}

// ifMatch reads the If-Match header (its lines joined) naming the job
// versions a person decided on: * (any version: nil), or a list of entity
// tags "v" (a bare v is taken too). As RFC 9110 compares If-Match strongly,
// a weak tag W/"v" matches no version: a list of weak tags only is an
// empty list, which no job is at (412). A replay must name one: a job may
// be held again for a newer reason after they looked.
func ifMatch(lines []string) ([]string, error) {
	h := strings.TrimSpace(strings.Join(lines, ","))
	switch {
	case h == "":
		return nil, &Error{Code: CodePreconditionRequired, Message: "send If-Match with the job's version from " +
			"GET /v1/ops/outbox/dead (* replays it as it is now): a job may be held again for a newer reason after you looked"}
	case h == "*":
		return nil, nil
	}
	malformed := &Error{Code: CodeInvalid, Message: "If-Match must be * or job versions (each its \"version\", quoted), comma-separated"}
	versions, tags := []string{}, 0
	for _, tag := range strings.Split(h, ",") {
		if tag = strings.TrimSpace(tag); tag == "" {
			continue // a list may hold empty elements (RFC 9110, 5.6.1)
		}
		tags++
		weak := strings.HasPrefix(tag, "W/")
		v, quoted := unquote(strings.TrimPrefix(tag, "W/"))
		if v == "" || strings.Trim(v, "0123456789") != "" || (weak && !quoted) {
			return nil, malformed
		}
		if !weak {
			versions = append(versions, v)
		}
	}
	if tags == 0 {
		return nil, malformed
	}
	return versions, nil
}

// unquote strips the double quotes around s, if it has both.
func unquote(s string) (string, bool) {
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		return s[1 : len(s)-1], true
	}
	return s, false
}
