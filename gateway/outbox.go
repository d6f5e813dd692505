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
	version, perr := ifMatch(c.GetHeader("If-Match"))
	if perr != nil {
		writeError(c, perr)
		return
	}
	job, err := d.Store.Outbox().ReplayIf(c.Request.Context(), id, "ops:"+CurrentPrincipal(c).Name, version)
	if job != nil {
		c.Header("ETag", `"`+job.Version+`"`)
	}
	switch {
	case err == nil:
		c.JSON(http.StatusOK, gin.H{"job": job})
	case errors.Is(err, ledger.ErrStale):
		writeError(c, Errorf(CodePreconditionFailed, "the job changed since version "+version+" (now "+job.Version+
			", last error: "+job.LastError+"): look at it again before replaying", err))
	case errors.Is(err, ledger.ErrConflict) && job.State == ledger.JobDead:
		writeError(c, Errorf(CodeConflict, "this release waits for its order's confirmation: replay that job first", err))
	case errors.Is(err, ledger.ErrConflict):
		writeError(c, Errorf(CodeConflict, "job is "+job.State+", only DEAD jobs can be replayed", err))
	default:
		writeError(c, ledgerError(err))
	}
}

// ifMatch reads an If-Match header naming the job version a person
// decided on: "v", v, or * (any version: ""). A replay must name one: a
// job may be held again for a newer reason after they looked.
func ifMatch(h string) (string, error) {
	h = strings.TrimSpace(h)
	switch {
	case h == "":
		return "", &Error{Code: CodePreconditionRequired, Message: "send If-Match with the job's version from " +
			"GET /v1/ops/outbox/dead (* replays it as it is now): a job may be held again for a newer reason after you looked"}
	case h == "*":
		return "", nil
	}
	v := strings.TrimSuffix(strings.TrimPrefix(h, `"`), `"`)
	if v == "" || strings.Trim(v, "0123456789") != "" {
		return "", &Error{Code: CodeInvalid, Message: "If-Match must be one job version (its \"version\"), or *"}
	}
	return v, nil
}
