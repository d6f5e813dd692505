package gateway

import (
	"time"

	"github.com/gin-gonic/gin"
)

// slots is a counting semaphore that never waits: take fails when all
// are in use.
type slots chan struct{}

func newSlots(n int) slots { return make(slots, n) }

func (s slots) take() bool {
	select {
	case s <- struct{}{}:
		return true
	default:
		return false
	}
}

func (s slots) give() { <-s }

// backOfficeBusy answers a finance or ops request over the bulkhead.
var backOfficeBusy = &Error{Code: CodeUnavailable, Message: "too many finance and ops requests at once, retry after 1 s",
	RetryAfter: time.Second}

// backOffice is the bulkhead of the finance and ops routes: at most
// MaxBackOffice of their requests are served at once, the rest are
// answered 503 at once. Dashboards and exports share the database with
// payment notifications, and must not take its connections from them.
// Refunds and order registration, on the paying user's path, are not
// behind it.
func (d *Deps) backOffice() gin.HandlerFunc {
	s := d.backOfficeSlots
	return func(c *gin.Context) {
		if !s.take() {
			writeError(c, backOfficeBusy)
			return
		}
		defer s.give()
		c.Next()
	}
}
