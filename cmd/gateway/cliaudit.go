package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/user"
	"time"

	"paygateway/ledger"
)

// audited runs an admin command after recording it in the audit log, as
// the API's routes are (nothing done without a record): who ran it (the
// operating system's user on this host), the command and what it acts on;
// then it stores how the command ended, a panic included.
func audited(ctx context.Context, s *ledger.Store, command, target string, do func() error) (err error) {
	host, _ := os.Hostname()
	id, err := s.BeginAudit(ctx, ledger.AuditEntry{Principal: "cli:" + currentUser(), Role: "cli", Method: "CLI",
		Path: "gateway " + command, Target: target, RemoteAddr: host})
	if err != nil {
		return fmt.Errorf("%s: audit: %w", command, err)
	}
	status := 500
	defer func() {
		// Recorded after a Ctrl-C too, but within a bound: until the command
		// returns, a second Ctrl-C is swallowed (signal.NotifyContext), and
		// a hung database would hold it for the pool's read timeout.
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cliAuditFinish)
		defer cancel()
		if ferr := s.FinishAudit(fctx, id, status); ferr != nil {
			slog.Warn("audit entry of an admin command not finished", "command", command, "err", ferr)
		}
	}()
	if err = do(); err == nil {
		status = 200
	}
	return err
}

// cliAuditFinish bounds the write of how an admin command ended, as the
// API's is bounded (a var: a test lowers it).
var cliAuditFinish = 5 * time.Second

// currentUser names who runs an admin command: the process's user as the
// system knows it ($USER is often unset under sudo or in containers, and
// anyone can set it), else $USER.
func currentUser() string {
	if u, err := user.Current(); err == nil && u.Username != "" {
		return u.Username
	}
	if u := os.Getenv("USER"); u != "" {
		return u
	}
	return "unknown"
}
