package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/user"

	"paygateway/ledger"
)

// cliAudit records an admin command in the audit log before it acts, as
// the API's routes are (nothing done without a record): who ran it (the
// operating system's user on this host), the command and what it acts on.
// The function it returns stores how the command ended.
func cliAudit(ctx context.Context, s *ledger.Store, command, target string) (func(error), error) {
	host, _ := os.Hostname()
	id, err := s.BeginAudit(ctx, ledger.AuditEntry{Principal: "cli:" + currentUser(), Role: "cli", Method: "CLI",
		Path: "gateway " + command, Target: target, RemoteAddr: host})
	if err != nil {
		return nil, fmt.Errorf("%s: audit: %w", command, err)
	}
	return func(err error) {
		status := 200
		if err != nil {
			status = 500
		}
		if ferr := s.FinishAudit(context.WithoutCancel(ctx), id, status); ferr != nil {
			slog.Warn("audit entry of an admin command not finished", "command", command, "err", ferr)
		}
	}, nil
}

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
