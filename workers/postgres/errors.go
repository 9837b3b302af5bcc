package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/syvault/syvault/events"
	"github.com/syvault/syvault/workers/driver"
)

// SQLSTATEs the driver tells apart.
const (
	stateDuplicateObject = "42710" // CREATE ROLE of a role that exists
	stateUniqueViolation = "23505" // two sessions inserting the same pg_authid row at once
	stateUndefinedObject = "42704" // a role that does not exist
	stateUndefinedTable  = "42P01"
	stateInvalidSchema   = "3F000"
	stateInvalidCatalog  = "3D000" // database does not exist
	stateInsufficient    = "42501"
	stateDependentObjs   = "2BP01"
	stateDeadlock        = "40P01"
	stateInternal        = "XX000" // "tuple concurrently updated" on catalog rows
	stateObjectInUse     = "55006"
	stateLockNotAvail    = "55P03" // lock_timeout
	stateNoConnections   = "55000" // a database that does not allow connections (datallowconn)
)

// sqlState returns err's SQLSTATE, or "" when err is not a server error.
func sqlState(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

// unavailable reports whether err means the target could not be reached or refused the
// admin: a failed connect, a network error, a timeout, or a server error of class 08
// (connection exception) or 28 (invalid authorisation), or the server shutting down.
// It looks at error types and SQLSTATEs only, never at message text.
func unavailable(err error) bool {
	var ce *pgconn.ConnectError
	if errors.As(err, &ce) {
		return true
	}
	if state := sqlState(err); state != "" {
		switch {
		case strings.HasPrefix(state, "08"), strings.HasPrefix(state, "28"):
			return true
		case state == "57P01", state == "57P02", state == "57P03":
			return true
		}
		return false
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return true
	}
	// A pooled connection the network or the server cut shows up as an EOF on the next
	// query (or as closed, when pgx noticed first), not as a connect error.
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || errors.Is(err, pgconn.ErrConnClosed) {
		return true
	}
	return errors.Is(err, context.DeadlineExceeded) || pgconn.Timeout(err)
}

// connectionLost reports whether err came from an established connection the server or
// the network closed (as opposed to a failure to connect): worth one more try on a fresh
// connection.
func connectionLost(err error) bool {
	var ce *pgconn.ConnectError
	if err == nil || errors.As(err, &ce) {
		return false
	}
	if pgconn.SafeToRetry(err) {
		return true // nothing was sent: the pooled connection was found closed
	}
	switch sqlState(err) {
	case "57P01", "57P02", "57P03":
		return true
	case "":
		return errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) ||
			errors.Is(err, pgconn.ErrConnClosed)
	}
	return false
}

// fail returns the error a Driver method hands back; see driver.DriverError.
func fail(op string, err error, code events.Code, msg string, secrets ...string) error {
	return driver.DriverError(op, err, unavailable(err), code, msg,
		"Could not connect to the PostgreSQL target as its admin; check host, port, TLS mode and admin credentials.", secrets...)
}

// retryable reports whether err is a transient catalog conflict worth retrying.
func retryable(err error) bool {
	switch sqlState(err) {
	case stateDeadlock, stateInternal, stateObjectInUse:
		return true
	}
	return false
}

// retry runs fn up to 5 times while it fails with a catalog conflict, backing off
// 20, 40, 80, 160 ms between attempts: the conflicts it absorbs are PostgreSQL's own
// catalog locking, not a failure of the target. (A removal's attempts, each retrying its
// statements so, are retried as a whole too: see RemoveTarget.)
func retry(ctx context.Context, fn func() error) error {
	return retryWhile(ctx, 5, retryable, fn)
}

// retryWhile runs fn up to attempts times while again says its error is worth another,
// backing off from 20 ms, doubling, between attempts.
func retryWhile(ctx context.Context, attempts int, again func(error) bool, fn func() error) error {
	backoff := 20 * time.Millisecond
	for i := 1; ; i++ {
		err := fn()
		if err == nil || i == attempts || !again(err) {
			return err
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return errors.Join(err, ctx.Err())
		case <-t.C:
		}
		backoff *= 2
	}
}

// failVerify returns the error Prepare hands back; see driver.VerifyError.
func failVerify(op string, err error, c driver.Conn) error {
	if sqlState(err) == stateInvalidCatalog {
		var ce *pgconn.ConnectError
		if errors.As(err, &ce) {
			return events.Wrap(driver.Scrub(err, c.Password), events.ETargetUnverified,
				fmt.Sprintf("The database %q does not exist on the target: check database.", c.Database))
		}
	}
	return driver.VerifyError(op, err, unavailable(err), strings.HasPrefix(sqlState(err), "28"), c, c.Password)
}
