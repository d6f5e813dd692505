package inventorysim

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// shutdownTimeout bounds the graceful part of stopping the server.
const shutdownTimeout = 5 * time.Second

// Run serves s on addr (e.g. "127.0.0.1:8082") until ctx ends, then shuts
// down gracefully. It returns nil after a clean shutdown.
func Run(ctx context.Context, addr string, s *Sim) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("inventory sim: listen on %s: %w", addr, err)
	}
	return Serve(ctx, ln, s)
}

// Serve serves s on ln until ctx ends, like Run; it closes ln. Use it with a
// listener on port 0 to learn the address before serving.
func Serve(ctx context.Context, ln net.Listener, s *Sim) error {
	// Requests get their own context, ended at shutdown so that stalled
	// ApplyThenTimeout answers do not hold the server open for 10s.
	reqCtx, endRequests := context.WithCancel(context.WithoutCancel(ctx))
	defer endRequests()
	srv := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 5 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return reqCtx },
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	slog.Info("inventory sim listening", "addr", ln.Addr().String())

	select {
	case err := <-served:
		return fmt.Errorf("inventory sim: serve: %w", err)
	case <-ctx.Done():
	}
	endRequests()
	return shutdown(srv, served)
}

func shutdown(srv *http.Server, served <-chan error) error {
	ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		_ = srv.Close() // graceful failed; force it, the first error says why
		return fmt.Errorf("inventory sim: shut down: %w", err)
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("inventory sim: serve: %w", err)
	}
	slog.Info("inventory sim stopped")
	return nil
}
