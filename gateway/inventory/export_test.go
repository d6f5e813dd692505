package inventory

import (
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"time"
)

// TrustOnly makes c trust only roots (a test server's certificate).
func TrustOnly(c *Client, roots *x509.CertPool) {
	c.http.Transport.(*http.Transport).TLSClientConfig = &tls.Config{RootCAs: roots}
}

// SetHTTP2Health shortens the HTTP/2 health checks of clients made after
// it, for a test; the returned function puts them back.
func SetHTTP2Health(pingAfter, pingTimeout time.Duration) (restore func()) {
	oldAfter, oldTimeout := h2PingAfter, h2PingTimeout
	h2PingAfter, h2PingTimeout = pingAfter, pingTimeout
	return func() { h2PingAfter, h2PingTimeout = oldAfter, oldTimeout }
}
