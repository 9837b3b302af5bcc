package mysql

import (
	"context"
	sqldriver "database/sql/driver"
	"errors"
	"net"
	"strings"

	"github.com/go-sql-driver/mysql"

	"github.com/syvault/syvault/events"
	"github.com/syvault/syvault/workers/driver"
)

// MySQL/MariaDB error numbers the driver tells apart.
const (
	errDBAccessDenied    = 1044 // also: GRANT of a privilege the admin may not give
	errAccessDenied      = 1045 // login refused
	errBadDB             = 1049
	errNoSuchThread      = 1094 // KILL of a session that already ended
	errKillDenied        = 1095
	errTableAccessDenied = 1142
	errNoSuchTable       = 1146
	errSpecificAccess    = 1227 // a global privilege (CREATE USER, CONNECTION ADMIN) is missing
	errCannotUser        = 1396 // CREATE USER of an existing user, ALTER USER of a missing one
	errCantCreateUser    = 1410 // GRANT that would create a user / not allowed
	errNoSuchUser        = 1133 // GRANT to a user that does not exist (MariaDB)
	errColumnAccess      = 1143 // SELECT of a column the admin may not read
	errRoleDenied        = 1698 // GRANT of a role without its ADMIN OPTION (MariaDB; SQLSTATE 28000)
	errStatementTimeout  = 1969 // max_statement_time exceeded (MariaDB)
	errInvalidRole       = 1959 // GRANT of a role that does not exist (MariaDB)
	errUnknownRole       = 3523 // GRANT of a role that does not exist (MySQL 8)
)

func errNumber(err error) uint16 {
	var me *mysql.MySQLError
	if errors.As(err, &me) {
		return me.Number
	}
	return 0
}

// connectError marks an error from opening an admin connection: whatever its cause, the
// target could not be reached or refused the admin.
type connectError struct{ err error }

func (e connectError) Error() string { return "connect: " + e.err.Error() }
func (e connectError) Unwrap() error { return e.err }

// unavailable reports whether err means the target could not be reached or refused the
// admin: a failed connect, a lost connection, a network error or timeout, or a server
// error of SQLSTATE class 08 (connection) or 28 (authorisation). It looks at error types,
// numbers and SQLSTATEs only, never at message text.
func unavailable(err error) bool {
	var ce connectError
	if errors.As(err, &ce) {
		return true
	}
	var me *mysql.MySQLError
	if errors.As(err, &me) {
		if me.Number == errRoleDenied {
			return false // a refused GRANT of a role, on a working connection
		}
		state := string(me.SQLState[:])
		return me.Number == errAccessDenied || strings.HasPrefix(state, "08") || strings.HasPrefix(state, "28")
	}
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, mysql.ErrInvalidConn) || errors.Is(err, sqldriver.ErrBadConn) ||
		errors.Is(err, context.DeadlineExceeded)
}

// fail returns the error a Driver method hands back; see driver.DriverError.
func fail(op string, err error, code events.Code, msg string, secrets ...string) error {
	return driver.DriverError(op, err, unavailable(err), code, msg,
		"Could not connect to the MySQL target as its admin; check host, port, TLS mode and admin credentials.", secrets...)
}

// scrub removes secrets from an error's text; see driver.Scrub.
func scrub(err error, secrets ...string) error { return driver.Scrub(err, secrets...) }

// failVerify returns the error Prepare hands back; see driver.VerifyError.
func failVerify(op string, err error, c driver.Conn, secrets ...string) error {
	return driver.VerifyError(op, err, unavailable(err), errNumber(err) == errAccessDenied, c, append(secrets, c.Password)...)
}
