package gateway

import (
	"errors"
	"net/http"
	"strconv"

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
	job, err := d.Store.Outbox().Replay(c.Request.Context(), id, "ops:"+CurrentPrincipal(c).Name)
	switch {
	case err == nil:
		c.JSON(http.StatusOK, gin.H{"job": job})
	case errors.Is(err, ledger.ErrConflict) && job.State == ledger.JobDead:
		writeError(c, Errorf(CodeConflict, "this release waits for its order's confirmation: replay that job first", err))
	case errors.Is(err, ledger.ErrConflict):
		writeError(c, Errorf(CodeConflict, "job is "+job.State+", only DEAD jobs can be replayed", err))
	default:
		writeError(c, ledgerError(err))
	}
}
