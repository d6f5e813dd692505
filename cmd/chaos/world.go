package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"paygateway/cmd/internal/stack"
	"paygateway/gateway/inventory/inventorysim"
	"paygateway/gateway/wechatpay/wxpaysim"
)

// world is everything a chaos run starts: private MariaDB and Redis, the
// gateway binary, and the two simulators in this process.
type world struct {
	dir     string
	db      *stack.MariaDB
	redis   *stack.Redis
	gw      *stack.Gateway
	id      *stack.Identity
	sim     *wxpaysim.Sim
	inv     *inventorysim.Sim
	sql     *sql.DB
	closers []func()
}

func startWorld(ctx context.Context, o Options) (*world, error) {
	w := &world{dir: o.Dir}
	if w.dir == "" {
		d, err := os.MkdirTemp("", "chaos")
		if err != nil {
			return nil, err
		}
		w.dir = d
		w.closers = append(w.closers, func() { stack.RemoveAll(d) })
	}
	if err := w.start(ctx, o); err != nil {
		w.close()
		return nil, err
	}
	return w, nil
}

func (w *world) start(ctx context.Context, o Options) error {
	var err error
	for _, d := range []string{"mariadb", "redis", "keys"} {
		if err := os.MkdirAll(filepath.Join(w.dir, d), 0o700); err != nil {
			return err
		}
	}
	bin, err := stack.BuildGateway(ctx, w.dir)
	if err != nil {
		return err
	}
	if w.db, err = stack.StartMariaDB(ctx, filepath.Join(w.dir, "mariadb")); err != nil {
		return fmt.Errorf("private mariadb: %w", err)
	}
	w.closers = append(w.closers, w.db.Stop)
	if _, err := stack.CreateDatabase(ctx, w.db.DSN(""), "chaos"); err != nil {
		return err
	}
	if w.sql, err = sql.Open("mysql", w.db.DSN("chaos")+"?parseTime=true"); err != nil {
		return err
	}
	w.closers = append(w.closers, func() { w.sql.Close() })
	if w.redis, err = stack.StartRedis(ctx, filepath.Join(w.dir, "redis")); err != nil {
		return fmt.Errorf("private redis: %w", err)
	}
	w.closers = append(w.closers, w.redis.Stop)
	if w.id, err = stack.NewIdentity(filepath.Join(w.dir, "keys")); err != nil {
		return err
	}
	simURL, err := w.serve(ctx, o)
	if err != nil {
		return err
	}
	env := w.id.Env("mysql://"+w.db.DSN("chaos"), w.redis.Addr(), simURL[0], simURL[1])
	w.gw = &stack.Gateway{Bin: bin, Dir: w.dir, Env: env}
	w.closers = append(w.closers, w.gw.Stop)
	if err := w.gw.Start(ctx); err != nil {
		return fmt.Errorf("gateway (log %s): %w", filepath.Join(w.dir, "gateway.log"), err)
	}
	return nil
}

// serve starts the WeChat Pay and inventory simulators; it returns their URLs.
func (w *world) serve(ctx context.Context, o Options) ([2]string, error) {
	var urls [2]string
	w.sim = wxpaysim.New(w.id.Keys, wxpaysim.Options{})
	w.closers = append(w.closers, w.sim.Close)
	w.inv = inventorysim.New()
	f := inventorysim.Faults{ErrorRate: o.InventoryErrors, ApplyThenTimeoutRate: o.InventoryTimeout}
	if err := f.Validate(); err != nil {
		return urls, err
	}
	w.inv.SetFaults(f)
	for i, h := range []http.Handler{w.sim.Handler(), w.inv.Handler()} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return urls, err
		}
		srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				o.logf("simulator stopped: %v", err)
			}
		}()
		w.closers = append(w.closers, func() { _ = srv.Close() })
		urls[i] = "http://" + ln.Addr().String()
	}
	return urls, nil
}

func (w *world) close() {
	for i := len(w.closers) - 1; i >= 0; i-- {
		w.closers[i]()
	}
	w.closers = nil
}
