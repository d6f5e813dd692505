package wxpaysim

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// Config configures a standalone simulator server (Start, Run).
type Config struct {
	Addr            string // listen address, e.g. "127.0.0.1:8081"; ":0" picks a port
	KeysDir         string // keys are loaded from here, or generated and written
	MchID, AppID    string // used when generating keys
	NotifyURL       string
	RefundNotifyURL string
	// RefundSettleDelay, NotifyRetryDelays, SignMode and RefundGap are as
	// in Options.
	RefundSettleDelay time.Duration
	NotifyRetryDelays []time.Duration
	SignMode          SignMode
	RefundGap         time.Duration
	Logger            *slog.Logger
}

// DefaultConfig returns the settings of the dev setup: the sim on
// 127.0.0.1:8081 notifying a gateway on 127.0.0.1:8080.
func DefaultConfig() Config {
	return Config{
		Addr:              "127.0.0.1:8081",
		KeysDir:           ".run/keys",
		MchID:             "1900000109",
		AppID:             "wxd678efh567hg6787",
		NotifyURL:         "http://127.0.0.1:8080/v1/wechatpay/notify/payment",
		RefundNotifyURL:   "http://127.0.0.1:8080/v1/wechatpay/notify/refund",
		RefundSettleDelay: time.Second,
		// WeChat Pay's: the gateway run against it must space the refund
		// applications of an order as it must in production.
		RefundGap: time.Minute,
	}
}

// Server is a running simulator.
type Server struct {
	Sim  *Sim
	Keys *Keys
	// URL is the base URL, e.g. "http://127.0.0.1:8081"; point the gateway's
	// WeChat Pay client BaseURL here.
	URL string

	srv  *http.Server
	done chan error
}

// Start loads or generates the keys, listens on cfg.Addr and serves in the
// background until Shutdown.
func Start(cfg Config) (*Server, error) {
	keys, err := LoadOrGenerateKeys(cfg.KeysDir, cfg.MchID, cfg.AppID)
	if err != nil {
		return nil, fmt.Errorf("start wxpaysim: %w", err)
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("start wxpaysim: %w", err)
	}
	base := "http://" + ln.Addr().String()
	sim := New(keys, Options{
		NotifyURL: cfg.NotifyURL, RefundNotifyURL: cfg.RefundNotifyURL, BaseURL: base,
		SignMode: cfg.SignMode, RefundSettleDelay: cfg.RefundSettleDelay,
		NotifyRetryDelays: cfg.NotifyRetryDelays, RefundGap: cfg.RefundGap, Logger: cfg.Logger,
	})
	s := &Server{
		Sim: sim, Keys: keys, URL: base, done: make(chan error, 1),
		srv: &http.Server{Handler: sim.Handler(), ReadHeaderTimeout: 10 * time.Second},
	}
	go func() { s.done <- s.srv.Serve(ln) }()
	return s, nil
}

// Shutdown stops accepting requests, waits for in-flight ones (bounded by
// ctx) and stops the simulator's background work.
func (s *Server) Shutdown(ctx context.Context) error {
	s.Sim.Close() // releases held connections first so Shutdown can finish
	err := s.srv.Shutdown(ctx)
	if serr := <-s.done; !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	if err != nil {
		return fmt.Errorf("shutdown wxpaysim: %w", err)
	}
	return nil
}

// Run starts the simulator and serves until ctx ends.
func Run(ctx context.Context, cfg Config) error {
	s, err := Start(cfg)
	if err != nil {
		return err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	log.Info("wxpaysim listening", "url", s.URL, "mchid", s.Keys.MchID, "keys", cfg.KeysDir)
	select {
	case <-ctx.Done():
	case err := <-s.done:
		s.done <- err // let Shutdown see it
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return s.Shutdown(shutdownCtx)
}
