package driver

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/syvault/syvault/events"
)

// ErrPartlyApplied is in the chain of a Prepare's failure that came after some of the
// target's settings were, or may have been, committed on its database (PostgreSQL sets a
// target's databases one transaction each, in turn; a statement whose answer was lost
// may have run): the database may hold grants no record names until the caller sets it
// back to the target as recorded.
var ErrPartlyApplied = errors.New("some of the target's settings were, or may have been, applied before the failure")

// PartlyApplied marks err, a Prepare's failure carrying an *events.Error, with
// ErrPartlyApplied, keeping its code and message.
func PartlyApplied(err error) error {
	var ee *events.Error
	if !errors.As(err, &ee) {
		return errors.Join(err, ErrPartlyApplied)
	}
	cause := ee.Err
	if cause == nil {
		cause = errors.New(ee.Message)
	}
	return events.Wrap(partly{cause}, ee.Code, ee.Message)
}

type partly struct{ error }

func (p partly) Unwrap() []error { return []error{p.error, ErrPartlyApplied} }

// DriverError is the error a Driver method hands back: an *events.Error whose code is
// ETargetUnavailable when unavailable says the target could not be reached (with
// unavailableMsg) and code otherwise (with msg), and whose cause is prefixed with op and
// scrubbed of every secret. When err already carries an *events.Error, its code and
// message win: the step that failed knew best what to tell the user.
func DriverError(op string, err error, unavailable bool, code events.Code, msg, unavailableMsg string, secrets ...string) error {
	if err == nil {
		return nil
	}
	var ee *events.Error
	if errors.As(err, &ee) {
		cause := error(errors.New(op))
		if ee.Err != nil {
			cause = Scrub(fmt.Errorf("%s: %w", op, ee.Err), secrets...)
		}
		return events.Wrap(cause, ee.Code, ee.Message)
	}
	cause := Scrub(fmt.Errorf("%s: %w", op, err), secrets...)
	if unavailable {
		return events.Wrap(cause, events.ETargetUnavailable, unavailableMsg)
	}
	return events.Wrap(cause, code, msg)
}

// Scrub returns err unless its text holds one of the secrets, in which case it returns a
// plain error with each secret replaced, dropping the chain on purpose so that no caller
// formatting an unwrapped cause finds the secret either. Drivers promise not to put
// secrets in errors; this is the layer that does not rely on the promise.
func Scrub(err error, secrets ...string) error {
	if err == nil {
		return nil
	}
	text := err.Error()
	leaked := false
	for _, s := range secrets {
		if s != "" && strings.Contains(text, s) {
			text = strings.ReplaceAll(text, s, "[redacted]")
			leaked = true
		}
	}
	if !leaked {
		return err
	}
	return errors.New(text)
}

// UndoTimeout bounds the drop that undoes a failed create.
const UndoTimeout = 30 * time.Second

// CreateOrUndo runs create, which reports whether its CREATE statement was sent; when it
// fails after that point, the user it may have left is dropped (see UndoCreate). The
// error is create's own.
func CreateOrUndo(ctx context.Context, d Driver, req CreateUserRequest, logger *slog.Logger, create func() (sent bool, err error)) error {
	sent, err := create()
	if err != nil && sent {
		UndoCreate(ctx, d, req, logger)
	}
	return err
}

// UndoCreate drops the user of a create that failed after its CREATE was sent, with a
// context that outlives ctx (a cancelled request must not leave the user behind). A
// failure is logged, scrubbed; the caller reports the create's own error.
func UndoCreate(ctx context.Context, d Driver, req CreateUserRequest, logger *slog.Logger) {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), UndoTimeout)
	defer cancel()
	drop := DropUserRequest{Conn: req.Conn, RecordUID: req.RecordUID, Username: req.Username, Grants: req.Grants}
	if err := d.DropUser(cctx, drop); err != nil {
		logger.WarnContext(ctx, "drop after failed create failed", "user", req.Username,
			"error", Scrub(err, req.Conn.Password, req.Password).Error())
	}
}

// VerifyError is the error Prepare hands back. Registering a target is where an operator
// learns what is wrong with its settings, so every failure is ETargetUnverified with a
// message naming what to fix: a refused admin login (loginRefused), an unreachable host, a
// TLS failure, or the missing right the step that failed named. unavailable says err
// means the target could not be reached or refused the admin, as for DriverError.
func VerifyError(op string, err error, unavailable, loginRefused bool, c Conn, secrets ...string) error {
	var ee *events.Error
	if errors.As(err, &ee) && ee.Code != events.ETargetUnavailable {
		return DriverError(op, err, false, events.EInternal, "", "", secrets...)
	}
	cause := Scrub(fmt.Errorf("%s: %w", op, err), secrets...)
	if !unavailable && !loginRefused {
		return events.Wrap(cause, events.ETargetUnverified, "The target could not be verified; the server log has the details.")
	}
	return events.Wrap(cause, events.ETargetUnverified, ConnectProblem(err, c, loginRefused))
}

// ConnectProblem says in one sentence why an admin connection to c failed and what to
// check, from the error's types alone.
func ConnectProblem(err error, c Conn, loginRefused bool) string {
	addr := net.JoinHostPort(c.Host, strconv.Itoa(c.Port))
	var (
		dnsErr    *net.DNSError
		unknownCA x509.UnknownAuthorityError
		hostErr   x509.HostnameError
		invalid   x509.CertificateInvalidError
		verifyErr *tls.CertificateVerificationError
		recordErr tls.RecordHeaderError
		alert     tls.AlertError
		netErr    net.Error
	)
	switch {
	case loginRefused:
		return fmt.Sprintf("The target refused the admin login: check admin_username (%q) and admin_password, "+
			"and that the database lets that user connect from this server's address.", c.Username)
	case errors.As(err, &dnsErr):
		return fmt.Sprintf("The host %q could not be resolved: check host.", c.Host)
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Sprintf("Nothing accepts connections at %s: check host and port, and that the database is running.", addr)
	case errors.As(err, &unknownCA):
		return fmt.Sprintf("The target's TLS certificate is signed by an authority this server does not trust: "+
			"give its CA in ca_cert (tls_mode %s).", c.TLSMode)
	case errors.As(err, &hostErr):
		return fmt.Sprintf("The target's TLS certificate is not valid for %q: set host to a name the certificate "+
			"covers, or use tls_mode require.", c.Host)
	case errors.As(err, &invalid), errors.As(err, &verifyErr):
		return fmt.Sprintf("The target's TLS certificate was refused (expired or not valid): check the server's "+
			"certificate and ca_cert (tls_mode %s).", c.TLSMode)
	case errors.As(err, &recordErr), errors.As(err, &alert):
		return fmt.Sprintf("The TLS handshake with %s failed: check tls_mode (%s); the server may not speak TLS there.", addr, c.TLSMode)
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &netErr) && netErr.Timeout():
		return fmt.Sprintf("No answer from %s in time: check host, port and any firewall between this server and the database.", addr)
	case c.TLSMode != events.TLSDisable:
		return fmt.Sprintf("Could not connect to %s as the admin: check host, port, tls_mode (%s; the server may not offer TLS) "+
			"and the admin credentials.", addr, c.TLSMode)
	}
	return fmt.Sprintf("Could not connect to %s as the admin: check host, port and the admin credentials.", addr)
}
