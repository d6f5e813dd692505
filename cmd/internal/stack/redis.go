package stack

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"time"
)

// Redis is a private, non-persistent redis-server on its own port.
type Redis struct {
	Dir  string
	Port int
	proc *Proc
}

// StartRedis starts redis-server on a free port.
func StartRedis(ctx context.Context, dir string) (*Redis, error) {
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	r := &Redis{Dir: dir, Port: port}
	return r, r.Start(ctx)
}

// Addr is host:port of the server.
func (r *Redis) Addr() string { return "127.0.0.1:" + strconv.Itoa(r.Port) }

// Start runs the server and waits until it answers PING.
func (r *Redis) Start(ctx context.Context) error {
	bin, err := LookPath("redis-server")
	if err != nil {
		return err
	}
	args := []string{"--port", strconv.Itoa(r.Port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--daemonize", "no", "--dir", r.Dir}
	r.proc, err = StartProc("redis-server", bin, args, nil, filepath.Join(r.Dir, "redis.log"))
	if err != nil {
		return err
	}
	return waitFor(ctx, r.proc, 15*time.Second, func() error { return ping(r.Addr()) })
}

// Ping says whether the server answers PING.
func (r *Redis) Ping() error { return ping(r.Addr()) }

// Stop kills the server (its data is not persistent anyway).
func (r *Redis) Stop() {
	if r.proc != nil {
		r.proc.Stop(5 * time.Second)
	}
}

func ping(addr string) error {
	c, err := net.DialTimeout("tcp", addr, 500*time.Millisecond)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	buf := make([]byte, 16)
	n, err := c.Read(buf)
	if err != nil {
		return err
	}
	if string(buf[:n]) != "+PONG\r\n" {
		return fmt.Errorf("redis answered %q", buf[:n])
	}
	return nil
}
