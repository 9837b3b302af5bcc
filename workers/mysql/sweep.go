package mysql

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
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
// drop there by that admin in this process (a lease lives at most a day, and so, as a
// rule, does a call of its application's).
const (
	sweepInterval = 5 * time.Second
	sweepFor      = 24 * time.Hour
)

// leaseSessions lists the sessions of lease users (vf_tmp_…, the shape every lease
// username has): as many as the applications hold open, whatever the number of
// accounts. ESCAPE, not a backslash: the server's sql_mode may be NO_BACKSLASH_ESCAPES.
const leaseSessions = `SELECT ID, USER FROM information_schema.PROCESSLIST WHERE USER LIKE 'vf|_tmp|_%' ESCAPE '|'`

// sweepKey names a sweep: one per server and admin. Admins of targets on one server may
// hold different rights (PROCESS, CONNECTION ADMIN, SELECT on mysql.user), so each
// sweeps with its own; the same admin for several targets sweeps once.
func sweepKey(c driver.Conn) string {
	addr, _ := address(c) // a port out of range has dropped nothing
	return addr + " " + c.Username
}

// sweepTarget is what a sweep works with: the admin connection of the last drop under
// its key (a PUT that changed the admin's password reaches it), and when that was.
type sweepTarget struct {
	conn driver.Conn
	last time.Time
}

// sweepAfterDrop notes a drop by c's admin on c's server and starts their sweep if none
// runs.
func (d *Driver) sweepAfterDrop(c driver.Conn) {
	key := sweepKey(c)
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return
	}
	_, running := d.swept[key]
	d.swept[key] = sweepTarget{conn: c, last: time.Now()}
	if running {
		return
	}
	d.sweeps.Add(1)
	go d.sweep(key)
}

// sweep ends orphaned lease sessions every sweepInterval until sweepFor after the last
// drop under key, or until Close.
func (d *Driver) sweep(key string) {
	defer d.sweeps.Done()
	t := time.NewTicker(sweepInterval)
	defer t.Stop()
	warned := false
	ended := map[uint64]bool{} // sessions this sweep sent KILL CONNECTION, while listed
	for {
		select {
		case <-d.ctx.Done():
			return
		case <-t.C:
		}
		d.mu.Lock()
		st := d.swept[key]
		if time.Since(st.last) > sweepFor {
			delete(d.swept, key)
			d.mu.Unlock()
			return
		}
		d.mu.Unlock()
		ctx, cancel := context.WithTimeout(d.ctx, sweepInterval)
		err := d.endOrphans(ctx, st.conn, ended)
		cancel()
		if err != nil && d.ctx.Err() == nil && !warned {
			// Once per sweep: a target that is down says so through its operations.
			warned = true
			d.logger.Warn("could not look for sessions of dropped lease users; a session a DEFINER routine hid from its revocation may live on "+
				"(the admin needs PROCESS, CONNECTION ADMIN and SELECT (User, Host) ON mysql.user)",
				slog.String("error", scrub(err, st.conn.Password).Error()))
		}
	}
}

// endOrphans ends every session of a lease user whose account is gone, but those ended
// lists (sent KILL CONNECTION by an earlier round, and rolling back since). A session
// listed as Killed is not taken as ending on its own: a lease may KILL QUERY its own.
func (d *Driver) endOrphans(ctx context.Context, c driver.Conn, ended map[uint64]bool) error {
	conn, err := d.connect(ctx, c)
	if err != nil {
		return err
	}
	defer conn.Close()
	rows, err := conn.QueryContext(ctx, leaseSessions)
	if err != nil {
		return fmt.Errorf("list lease users' sessions: %w", err)
	}
	byUser := map[string][]uint64{}
	listed := map[uint64]bool{}
	for rows.Next() {
		var id uint64
		var user string
		if err := rows.Scan(&id, &user); err != nil {
			rows.Close()
			return fmt.Errorf("list lease users' sessions: %w", err)
		}
		listed[id] = true
		if !ended[id] {
			byUser[user] = append(byUser[user], id)
		}
	}
	err = rows.Err()
	rows.Close()
	if err != nil {
		return fmt.Errorf("list lease users' sessions: %w", err)
	}
	for id := range ended {
		if !listed[id] {
			delete(ended, id) // gone
		}
	}
	if len(byUser) == 0 {
		return nil
	}
	gone, err := missingAccounts(ctx, conn, slices.Collect(maps.Keys(byUser)))
	if err != nil {
		return err
	}
	for _, user := range gone {
		for _, id := range byUser[user] {
			ok, retry, err := killSession(ctx, conn, id)
			if err != nil {
				return err
			}
			if !ok {
				d.logger.Debug("could not end a session of a dropped lease user; trying again next round",
					slog.String("user", user), slog.Uint64("session", id), slog.String("error", retry.Error()))
				continue
			}
			ended[id] = true
			d.logger.Warn("ended a session of a dropped lease user: a DEFINER routine or trigger it was running hid it from its revocation",
				slog.String("user", user), slog.Uint64("session", id))
		}
	}
	return nil
}

// missingAccounts returns those of users that have no account 'user'@'%' (the only
// host lease users are made with): lookups by the primary key, a thousand at a time, not
// a scan of every account (a server may hold 100,000 lease users).
func missingAccounts(ctx context.Context, conn *sql.Conn, users []string) ([]string, error) {
	const chunk = 1000
	exists := map[string]bool{}
	for rest := users; len(rest) > 0; {
		part := rest[:min(chunk, len(rest))]
		rest = rest[len(part):]
		args := make([]any, len(part))
		for i, u := range part {
			args[i] = u
		}
		q := "SELECT User FROM mysql.user WHERE Host = '%' AND User IN (?" + strings.Repeat(", ?", len(part)-1) + ")"
		rows, err := conn.QueryContext(ctx, q, args...)
		if err != nil {
			return nil, fmt.Errorf("look up lease users' accounts: %w", err)
		}
		for rows.Next() {
			var u string
			if err := rows.Scan(&u); err != nil {
				rows.Close()
				return nil, fmt.Errorf("look up lease users' accounts: %w", err)
			}
			exists[u] = true
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return nil, fmt.Errorf("look up lease users' accounts: %w", err)
		}
	}
	var gone []string
	for _, u := range users {
		if !exists[u] {
			gone = append(gone, u)
		}
	}
	return gone, nil
}
