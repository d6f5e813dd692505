package gateway

import (
	"context"
	"strings"

	"github.com/gin-gonic/gin"
)

type notifyListenerKey struct{}

// OnNotifyListener marks ctx (a server's BaseContext) as that of the
// listener kept for WeChat Pay's notifications (http.notify_addr): the
// router serves only the notification routes and the health checks there.
func OnNotifyListener(ctx context.Context) context.Context {
	return context.WithValue(ctx, notifyListenerKey{}, true)
}

// notifyPrefix starts every notification route.
const notifyPrefix = "/v1/wechatpay/notify/"

// notifyListenerOnly answers 404 on the notification listener to every
// route but the notifications and /healthz and /readyz. It goes by the
// route matched, not the raw path: "/v1/wechatpay/notify/../refunds" is
// no notification.
func notifyListenerOnly() gin.HandlerFunc {
	return func(c *gin.Context) {
		on, _ := c.Request.Context().Value(notifyListenerKey{}).(bool)
		route := c.FullPath()
		if !on || strings.HasPrefix(route, notifyPrefix) || route == "/healthz" || route == "/readyz" {
			c.Next()
			return
		}
		writeError(c, &Error{Code: CodeNotFound, Message: "only WeChat Pay notifications are served on this port"})
	}
}
