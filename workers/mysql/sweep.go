package mysql

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/syvault/syvault/workers/driver"
)

// A session that runs a SQL SECURITY DEFINER routine, or fires a DEFINER trigger, is
// listed in PROCESSLIST under the definer's name for as long as it is in there, so a
// revocation meanwhile cannot find it: DROP USER goes through, and when the routine
// returns the session carries on as the dropped user, keeping the database-wide
// privileges it had cached. Only then does it show under the lease user's name again.
// So after a drop, the server is searched every sweepInterval for sessions of lease
// users that no longer exist, and each is ended; the sweep stops sweepFor after the last
// drop on that server in this process (a lease lives at most a day, and so, as a rule,
// does a call of its application's).
const (
	sweepInterval = 5 * time.Second
	sweepFor      = 24 * time.Hour
)

// orphanSessions lists the sessions of lease users (vf_tmp_…, the shape every lease
// username has) whose account is gone. The admin reads account names in mysql.user for
// reconciliation already (GrantListing). ESCAPE, not a backslash: the server's sql_mode
// may be NO_BACKSLASH_ESCAPES.
const orphanSessions = `SELECT p.ID, p.USER FROM information_schema.PROCESSLIST p
	WHERE p.USER LIKE 'vf|_tmp|_%' ESCAPE '|' AND p.COMMAND <> 'Killed' AND p.USER NOT IN (SELECT u.User FROM mysql.user u)`

// sweepTarget is what a server's sweep works with: the admin connection of the target
// that dropped there last, and when.
type sweepTarget struct {
	conn driver.Conn
	last time.Time
}

// sweepAfterDrop notes a drop on c's server and starts its sweep if none runs. One
// sweep per server, whichever targets it serves: any admin that may end sessions sees
// them all.
func (d *Driver) sweepAfterDrop(c driver.Conn) {
	server := net.JoinHostPort(c.Host, strconv.Itoa(c.Port))
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return
	}
	_, running := d.swept[server]
	d.swept[server] = sweepTarget{conn: c, last: time.Now()}
	if running {
		return
	}
	d.sweeps.Add(1)
	go d.sweep(server)
}

// sweep ends orphaned lease sessions on server every sweepInterval until sweepFor after
// the last drop there, or until Close.
func (d *Driver) sweep(server string) {
	defer d.sweeps.Done()
	t := time.NewTicker(sweepInterval)
	defer t.Stop()
	warned := false
	for {
		select {
		case <-d.ctx.Done():
			return
		case <-t.C:
		}
		d.mu.Lock()
		st := d.swept[server]
		if time.Since(st.last) > sweepFor {
			delete(d.swept, server)
			d.mu.Unlock()
			return
		}
		d.mu.Unlock()
		c := st.conn
		ctx, cancel := context.WithTimeout(d.ctx, sweepInterval)
		err := d.endOrphans(ctx, c)
		cancel()
		if err != nil && d.ctx.Err() == nil && !warned {
			// Once per sweep: a target that is down says so through its operations.
			warned = true
			d.logger.Warn("could not look for sessions of dropped lease users; a session a DEFINER routine hid from its revocation may live on "+
				"(the admin needs PROCESS, CONNECTION ADMIN and SELECT (User, Host) ON mysql.user)",
				slog.String("error", scrub(err, c.Password).Error()))
		}
	}
}

// endOrphans ends every session orphanSessions lists on c's server.
func (d *Driver) endOrphans(ctx context.Context, c driver.Conn) error {
	conn, err := d.connect(ctx, c)
	if err != nil {
		return err
	}
	defer conn.Close()
	type orphan struct {
		id   uint64
		user string
	}
	rows, err := conn.QueryContext(ctx, orphanSessions)
	if err != nil {
		return fmt.Errorf("list sessions of dropped lease users: %w", err)
	}
	var found []orphan
	for rows.Next() {
		var o orphan
		if err := rows.Scan(&o.id, &o.user); err != nil {
			rows.Close()
			return fmt.Errorf("list sessions of dropped lease users: %w", err)
		}
		found = append(found, o)
	}
	if err := rows.Close(); err != nil {
		return fmt.Errorf("list sessions of dropped lease users: %w", err)
	}
	for _, o := range found {
		_, err := conn.ExecContext(ctx, fmt.Sprintf("KILL CONNECTION %d", o.id))
		if err != nil && errNumber(err) != errNoSuchThread {
			return fmt.Errorf("end session %d of dropped lease user %s: %w", o.id, o.user, err)
		}
		d.logger.Warn("ended a session of a dropped lease user: a DEFINER routine or trigger it was running hid it from its revocation",
			slog.String("user", o.user), slog.Uint64("session", o.id))
	}
	return nil
}
