package mysql

import (
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/syvault/syvault/events"
	"github.com/syvault/syvault/workers/driver"
)

// Prepare verifies the admin's rights by doing what a lease will do, with a throwaway
// probe user (probeName): it creates it (CREATE USER), grants it every grant of
// req.Grants (the admin holds them WITH GRANT OPTION, the databases and tables exist),
// logs in as it, finds that session in PROCESSLIST (PROCESS) and kills it (CONNECTION
// ADMIN or SUPER), then drops it. It also creates the target's marker role (see mark), which holds no
// privilege, last, so that no step after it can refuse and leave it; nothing else is
// left on the target. Idempotent and safe for concurrent use.
//
// A missing right or a grant that cannot be applied fails with ETargetUnverified and a
// message naming it; an unreachable target or a refused admin login with
// ETargetUnverified too, with a message saying what to check.
func (d *Driver) Prepare(ctx context.Context, req driver.PrepareRequest) error {
	const op = "mysql.Prepare"
	secret := req.Conn.Password
	specs, err := parseGrants(req.Grants, req.Conn.Database)
	if err != nil {
		return fail(op, err, events.ETargetUnverified, "The target's grants are invalid: "+err.Error()+".", secret)
	}
	conn, err := d.connect(ctx, req.Conn)
	if err != nil {
		return failVerify(op, err, req.Conn)
	}
	defer conn.Close()
	// Rights first: an admin without any privilege on a database cannot see it either, and
	// "grant these" is the answer that helps then.
	if err := adminRights(ctx, conn, specs); err != nil {
		return failVerify(op, err, req.Conn)
	}
	if err := checkDatabases(ctx, conn, specs); err != nil {
		return failVerify(op, err, req.Conn)
	}

	// The server's clock names the probe and ages the probes left: SyVault hosts sharing
	// a server need not agree on the time. The session's id lets an undo end it (undo).
	var now int64
	var session uint64
	if err := conn.QueryRowContext(ctx, "SELECT CAST(UNIX_TIMESTAMP() AS SIGNED), CONNECTION_ID()").Scan(&now, &session); err != nil {
		return failVerify(op, fmt.Errorf("read the server's clock: %w", err), req.Conn)
	}
	probe := probeName(time.Unix(now, 0))
	password := rand.Text()
	acct, _ := account(probe) // a fixed-shape name: cannot fail
	quoted, _ := quoteString(password)
	_, err = conn.ExecContext(ctx, "CREATE USER "+acct+" IDENTIFIED BY "+quoted)
	if err == nil || errNumber(err) == 0 { // made, or unanswered (a cancelled context): maybe made
		defer d.undo(ctx, conn, session, req.Conn, "DROP USER IF EXISTS "+acct, "probe user "+probe, password)
	}
	if err != nil {
		if n := errNumber(err); n == errSpecificAccess || n == errDBAccessDenied || n == errTableAccessDenied {
			err = events.Wrap(err, events.ETargetUnverified, "The admin may not create users: grant it CREATE USER.")
		}
		return failVerify(op, err, req.Conn, password)
	}
	if err := applyGrants(ctx, conn, acct, specs); err != nil {
		return failVerify(op, err, req.Conn, password)
	}
	if err := d.probeKill(ctx, conn, req.Conn, probe, password); err != nil {
		return failVerify(op, err, req.Conn, password)
	}
	// Last, so that no later step's refusal leaves the target's marker role behind under
	// a record uid nothing names. It warns when the admin may not give the role.
	if created, err := d.mark(ctx, conn, req.RecordUID, acct); err != nil {
		if created && req.New { // an update's is kept: its leases may be marked with it
			role, _ := markerRole(req.RecordUID) // it named the role it made
			d.undo(ctx, conn, session, req.Conn, "DROP ROLE IF EXISTS "+role, "marker role "+markerPrefix+req.RecordUID)
		}
		return failVerify(op, err, req.Conn, password)
	}
	d.dropStaleProbes(ctx, conn, time.Unix(now, 0))
	d.logger.DebugContext(ctx, "target prepared", "grants", len(specs))
	return nil
}

// probeStale is how old a probe user's name must say it is before a verification drops
// it. A verification lasts seconds (its request's deadline, then its undo's), so a probe
// that old was left by a process that died in the middle: a user holding a target's
// grants, with a password nobody knows.
const probeStale = time.Hour

// staleProbesPerSweep bounds the drops one verification makes, each of which takes the
// server's privilege lock: a backlog goes over the next verifications, oldest first.
const staleProbesPerSweep = 16

const probePrefix = "vf_probe_"

// probeName names a probe user made at now (the server's clock): vf_probe_<unix seconds,
// base 36>_<8 random characters>: 24 characters until 2038, 25 for centuries after
// (MySQL allows 32).
func probeName(now time.Time) string {
	return probePrefix + strconv.FormatInt(now.Unix(), 36) + "_" + strings.ToLower(rand.Text()[:8])
}

// probeBorn returns when the probe user name was made, as its name says; ok is false for
// a name probeName does not make (an earlier version's probe, which names no time, or a
// user that is not SyVault's), which is never dropped.
func probeBorn(name string) (born time.Time, ok bool) {
	rest, found := strings.CutPrefix(name, probePrefix)
	stamp, random, cut := strings.Cut(rest, "_")
	if !found || !cut || len(random) != 8 || strings.Trim(random, "abcdefghijklmnopqrstuvwxyz234567") != "" {
		return time.Time{}, false
	}
	secs, err := strconv.ParseInt(stamp, 36, 64)
	if err != nil || secs <= 0 || strconv.FormatInt(secs, 36) != stamp {
		return time.Time{}, false
	}
	return time.Unix(secs, 0), true
}

// dropStaleProbes drops probe users that verifications on this server left, by their
// names more than probeStale before now (the server's clock): every verification that
// passes sweeps a few, so a process killed while verifying leaves its probe until the
// next one. Best effort, logged, within the verification's deadline: the admin's rights
// were just verified, and a probe holds no password anyone knows.
func (d *Driver) dropStaleProbes(ctx context.Context, conn *sql.Conn, now time.Time) {
	names, err := query[string](ctx, conn, "SELECT User FROM mysql.user WHERE User LIKE 'vf!_probe!_%' ESCAPE '!' AND Host = '%' ORDER BY User")
	if err != nil {
		d.logger.WarnContext(ctx, "could not list the probe users verifications left", "error", err.Error())
		return
	}
	// Oldest first (base-36 stamps of one length sort as their times); a few failures
	// (rights, locks) end the sweep, the next verification tries again.
	dropped, failed := 0, 0
	for _, name := range names {
		born, ok := probeBorn(name)
		if !ok || now.Sub(born) < probeStale {
			continue
		}
		if dropped == staleProbesPerSweep || failed == 3 || ctx.Err() != nil {
			break
		}
		acct, err := account(name)
		if err != nil {
			continue
		}
		if _, err := conn.ExecContext(ctx, "DROP USER IF EXISTS "+acct); err != nil {
			failed++
			d.logger.WarnContext(ctx, "could not drop a probe user a verification left", "user", name, "error", err.Error())
			continue
		}
		dropped++
		d.logger.InfoContext(ctx, "dropped a probe user a verification left", "user", name, "made", born.UTC())
	}
}

// undo runs stmt to take back what Prepare made for its checks, or what a refused one
// made (what names it), with a context that outlives ctx, on conn or, when that is
// gone, on a fresh connection: the MySQL driver closes the connection of a query its
// context cancelled, and a cancelled registration must not leave a probe user with its
// grants, or a marker role. The statement whose answer was cut off may still be running
// in conn's server session (session), and a CREATE committing after the undo's DROP
// would stay: that session is ended, and gone, first. A failure is logged, scrubbed of
// the admin password and secrets.
func (d *Driver) undo(ctx context.Context, conn *sql.Conn, session uint64, c driver.Conn, stmt, what string, secrets ...string) {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), driver.UndoTimeout)
	defer cancel()
	_, err := conn.ExecContext(cctx, stmt)
	if err != nil && errNumber(err) == 0 { // no answer from the server: the connection is gone
		var fresh *sql.Conn
		if fresh, err = d.connect(cctx, c); err == nil {
			if err = endSession(cctx, fresh, session); err == nil {
				_, err = fresh.ExecContext(cctx, stmt)
			}
			fresh.Close()
		}
	}
	if err != nil {
		d.logger.WarnContext(ctx, "could not drop what a target's verification made", "what", what,
			"error", scrub(err, append(secrets, c.Password)...).Error())
	}
}

// checkDatabases fails with ETargetUnverified when a grant's database is not visible to
// the admin: GRANT ON db.* succeeds even for a database that does not exist.
func checkDatabases(ctx context.Context, conn *sql.Conn, specs []grantSpec) error {
	for i, s := range specs {
		var n int
		err := conn.QueryRowContext(ctx,
			"SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?", s.database).Scan(&n)
		if err != nil {
			return fmt.Errorf("check database of grant %d: %w", i+1, err)
		}
		if n == 0 {
			return events.Errorf(events.ETargetUnverified,
				"Cannot apply %s: the database does not exist or the admin holds no privilege on it.", s.describe(i))
		}
	}
	return nil
}

// probeKill logs in as the probe user and checks the admin sees and kills that session.
func (d *Driver) probeKill(ctx context.Context, admin *sql.Conn, c driver.Conn, user, password string) error {
	probeConn := c
	probeConn.Username, probeConn.Password, probeConn.Database = user, password, ""
	cfg, err := config(probeConn, d.logger)
	if err != nil {
		return err
	}
	connector, err := mysql.NewConnector(cfg)
	if err != nil {
		return fmt.Errorf("probe connector: %w", err)
	}
	db := sql.OpenDB(connector)
	defer db.Close()
	sess, err := db.Conn(ctx)
	if err != nil {
		return events.Wrap(err, events.ETargetUnverified,
			"A user created by the admin could not log in; check that accounts @'%' may connect from SyVault.")
	}
	defer sess.Close()
	var id uint64
	if err := sess.QueryRowContext(ctx, "SELECT CONNECTION_ID()").Scan(&id); err != nil {
		return fmt.Errorf("probe session id: %w", err)
	}
	ids, err := listSessions(ctx, admin, user)
	if err != nil {
		return err
	}
	if len(ids) == 0 {
		return events.Errorf(events.ETargetUnverified,
			"The admin cannot see other users' sessions: grant it PROCESS.")
	}
	if err := killSessions(ctx, admin, user); err != nil {
		return err
	}
	// The killed session must now fail; if it does not, the kill did nothing.
	if err := sess.PingContext(ctx); err == nil {
		return errors.New("probe session survived KILL")
	}
	return nil
}
