package workers

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/syvault/syvault/events"
)

// DriverError is the error a Driver method hands back: an *events.Error whose code is
// ETargetUnavailable when unavailable says the target could not be reached (with
// unavailableMsg) and code otherwise (with msg), and whose cause is prefixed with op and
// scrubbed of every secret. When err already carries an *events.Error, its code and
// message win: the step that failed knew best what to tell the user.
func DriverError(op string, err error, unavailable bool, code events.Code, msg, unavailableMsg string, secrets ...string) error {
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
	drop := DropUserRequest{Conn: req.Conn, Username: req.Username, Grants: req.Grants}
	if err := d.DropUser(cctx, drop); err != nil {
		logger.WarnContext(ctx, "drop after failed create failed", "user", req.Username,
			"error", Scrub(err, req.Conn.Password, req.Password).Error())
	}
}
