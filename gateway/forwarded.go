package gateway

import (
	"net/netip"
	"strings"

	"github.com/gin-gonic/gin"
)

// forwardedWithoutPorts drops the port from each X-Forwarded-For entry
// that carries one ("192.0.2.7:51234", "[2001:db8::7]:443"), as some
// load balancers write them. gin takes an entry it cannot parse as an
// address for the end of the trusted chain and falls back to the proxy's
// own address, so behind such a proxy every client would share one
// wrong-key lockout and be audited as the proxy. Entries are otherwise
// kept as sent: which one is the client's is still gin's choice, from the
// trusted proxies.
func forwardedWithoutPorts() gin.HandlerFunc {
	return func(c *gin.Context) {
		values := c.Request.Header.Values("X-Forwarded-For")
		for i, v := range values {
			if strings.Contains(v, ":") {
				values[i] = stripPorts(v)
			}
		}
		c.Next()
	}
}

// stripPorts rewrites one X-Forwarded-For value, entry by entry.
func stripPorts(v string) string {
	entries := strings.Split(v, ",")
	for i, e := range entries {
		if ap, err := netip.ParseAddrPort(strings.TrimSpace(e)); err == nil {
			entries[i] = ap.Addr().String()
		}
	}
	return strings.Join(entries, ",")
}
