// Package drivertest is the test suite every driver.Driver passes: one set of subtests,
// run by each driver's tests against a live server that checks passwords, so that the
// PostgreSQL and MySQL drivers are held to the same contract.
//
// A driver package builds a Harness (how to reach its server, make a scratch database and
// log in as a lease user) and calls Run from a test, and Bench from its benchmarks.
package drivertest

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/syvault/syvault/events"
	"github.com/syvault/syvault/workers/driver"
)

// Session is one open login of a lease user.
type Session interface {
	// Exec runs one statement and discards its result.
	Exec(ctx context.Context, sql string) error
	Close() error
}

// Scratch is a database made for one suite run. Table references are written so a user
// logged in to Database can use them in SQL as they are.
type Scratch struct {
	// Database is where the lease users log in.
	Database string
	// Schema is the schema of the tables (PostgreSQL), or empty.
	Schema string
	// Grants give SELECT and INSERT on Granted and nothing on Denied.
	Grants []events.Grant
	// Granted and Denied are tables holding an integer column id.
	Granted, Denied string
	// NewTable is a table a user may create once AllowCreate was called for it.
	NewTable string
	// Ungrantable is a grant the admin may not give: a privilege it holds without the
	// grant option, or does not hold.
	Ungrantable events.Grant
}

// Harness is what Run needs from a driver package. Every field is required.
type Harness struct {
	// NewDriver returns a fresh driver; Run closes it.
	NewDriver func() driver.Driver
	// Admin reaches the server as a minimal-rights admin (not a superuser). The server
	// must check passwords.
	Admin driver.Conn
	// NewScratch makes a scratch database with two tables, one granted and one not, and
	// removes it in tb.Cleanup.
	NewScratch func(tb testing.TB) Scratch
	// Login opens a session as user on database.
	Login func(ctx context.Context, user, password, database string) (Session, error)
	// AllowCreate lets user create tables in s (run as a superuser), so that the user
	// can own something when it is dropped.
	AllowCreate func(ctx context.Context, s Scratch, user string) error
	// AdminExec runs a statement as Admin in s.Database.
	AdminExec func(ctx context.Context, s Scratch, sql string) error
	// ActAsUser, when set, is a statement that makes a lease user's session act as the
	// user itself rather than as whatever the driver starts its sessions as (PostgreSQL:
	// SET ROLE NONE, leaving the target's group role), so that the user owns what it
	// creates.
	ActAsUser string
	// Expires says the engine enforces a database-side expiry (PostgreSQL VALID UNTIL).
	Expires bool
	// RoleExists asks the server, as a superuser, whether a role (PostgreSQL) or role
	// account (MySQL) of that name exists.
	RoleExists func(ctx context.Context, name string) (bool, error)
}

// Skip ends tb when the server a harness needs is missing: a skip locally, a failure
// when the environment variable CI is "true", where a skipped suite would pass silently.
func Skip(tb testing.TB, reason string) {
	tb.Helper()
	if os.Getenv("CI") == "true" {
		tb.Fatalf("CI=true and the test server is unavailable: %s", reason)
	}
	tb.Skipf("test server unavailable (set CI=true to fail instead): %s", reason)
}

const opTimeout = 2 * time.Minute

// Run runs the suite against h. Subtests share one driver and one scratch database; each
// uses its own target (record uid) and users, and drops what it created.
func Run(t *testing.T, h Harness) {
	d := h.NewDriver()
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	s := h.NewScratch(t)
	r := &run{t: t, h: h, d: d, s: s}
	// Each subtest's target is removed at the end, as deleting it through the API would:
	// what Prepare and CreateUser leave per target (MySQL's marker role, PostgreSQL's
	// group role) must not pile up on a shared server from run to run.
	t.Cleanup(func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		for _, uid := range r.uids {
			ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
			if err := d.RemoveTarget(ctx, driver.RemoveTargetRequest{Conn: h.Admin, RecordUID: uid}); err != nil {
				t.Logf("removing target %s: %v", uid, err)
			}
			cancel()
		}
	})

	t.Run("Prepare/OK", r.testPrepareOK)
	t.Run("Prepare/UngrantablePrivilege", r.testPrepareUngrantable)
	t.Run("Prepare/NoSuchTable", r.testPrepareNoSuchTable)
	t.Run("Prepare/RefusedAtTheSecondGrant", r.testPrepareRefusedAtTheSecondGrant)
	t.Run("CreateUser/LoginSelectInsert", r.testLoginSelectInsert)
	t.Run("CreateUser/UngrantedTableDenied", r.testUngrantedDenied)
	t.Run("CreateUser/WrongPasswordRefused", r.testWrongPassword)
	t.Run("CreateUser/TwiceSecondPasswordWins", r.testCreateTwice)
	t.Run("CreateUser/WithoutPrepare", r.testCreateWithoutPrepare)
	t.Run("CreateUser/SchemaWideGrantCoversLaterTables", r.testSchemaWide)
	t.Run("CreateUser/BadGrantLeavesNoUser", r.testBadGrantLeavesNoUser)
	t.Run("CreateUser/ConnectionLimit", r.testConnectionLimit)
	t.Run("RenewUser", r.testRenew)
	t.Run("DropUser/TerminatesOpenSession", r.testDropTerminates)
	t.Run("DropUser/UserOwningTable", r.testDropOwner)
	t.Run("DropUser/Missing", r.testDropMissing)
	t.Run("ListUsers/MarkedUsersOfTheTargetOnly", r.testListUsers)
	t.Run("Concurrent/16CreateThen16Drop", func(t *testing.T) { r.testConcurrent(t, true) })
	t.Run("Concurrent/16CreateWithoutPrepare", func(t *testing.T) { r.testConcurrent(t, false) })
	t.Run("Errors/UnreachablePort", r.testUnreachable)
	t.Run("Errors/WrongAdminPassword", r.testWrongAdminPassword)
}

type run struct {
	t *testing.T
	h Harness
	d driver.Driver
	s Scratch

	mu   sync.Mutex
	uids []string // every record uid a subtest used, removed when the suite ends
}

// newUID returns a new record uid for a subtest's target, removed when the suite ends.
func (r *run) newUID() string {
	uid := NewRecordUID()
	r.mu.Lock()
	r.uids = append(r.uids, uid)
	r.mu.Unlock()
	return uid
}

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), opTimeout)
	t.Cleanup(cancel)
	return ctx
}

// NewRecordUID returns a random mixed-case base62 record uid, like SyVault's.
func NewRecordUID() string { return "T" + base62(15) }

// NewUsername returns a lease username: vf_tmp_ and 8 random characters.
func NewUsername() string { return "vf_tmp_" + strings.ToLower(base62(8)) }

// NewPassword returns a random password holding a single quote, so every run also
// checks the driver's literal quoting.
func NewPassword() string { return "p'" + base62(22) }

func base62(n int) string {
	const alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}

func (r *run) prepare(t *testing.T, uid string) {
	t.Helper()
	err := r.d.Prepare(ctxFor(t), driver.PrepareRequest{Conn: r.h.Admin, RecordUID: uid, Grants: r.s.Grants})
	if err != nil {
		t.Fatalf("Prepare: %v", err)
	}
}

// createReq builds a request for a new user of target uid expiring in an hour.
func (r *run) createReq(uid, user, password string, grants []events.Grant) driver.CreateUserRequest {
	return driver.CreateUserRequest{
		Conn: r.h.Admin, RecordUID: uid, Username: user, Password: password,
		ExpiresAt: time.Now().Add(time.Hour), Grants: grants,
	}
}

// mustCreate creates a user with the scratch grants and drops it in t.Cleanup.
func (r *run) mustCreate(t *testing.T, uid string) (user, password string) {
	t.Helper()
	user, password = NewUsername(), NewPassword()
	r.dropInCleanup(t, user)
	if err := r.d.CreateUser(ctxFor(t), r.createReq(uid, user, password, r.s.Grants)); err != nil {
		t.Fatalf("CreateUser: %v", err)
	}
	return user, password
}

func (r *run) dropInCleanup(t *testing.T, user string) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
		defer cancel()
		if err := r.drop(ctx, user); err != nil {
			t.Errorf("cleanup DropUser(%s): %v", user, err)
		}
	})
}

func (r *run) drop(ctx context.Context, user string) error {
	return r.d.DropUser(ctx, driver.DropUserRequest{Conn: r.h.Admin, Username: user, Grants: r.s.Grants})
}

// mustLogin opens a session and closes it in t.Cleanup.
func (r *run) mustLogin(t *testing.T, user, password string) Session {
	t.Helper()
	sess, err := r.h.Login(ctxFor(t), user, password, r.s.Database)
	if err != nil {
		t.Fatalf("Login(%s): %v", user, err)
	}
	t.Cleanup(func() { _ = sess.Close() })
	return sess
}

// mustNotLogin asserts the credentials open no session.
func (r *run) mustNotLogin(t *testing.T, user, password string) {
	t.Helper()
	sess, err := r.h.Login(ctxFor(t), user, password, r.s.Database)
	if err == nil {
		_ = sess.Close()
		t.Fatalf("Login(%s) succeeded; want it refused", user)
	}
}

func mustExec(t *testing.T, sess Session, sql string) {
	t.Helper()
	if err := sess.Exec(ctxFor(t), sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func mustCode(t *testing.T, err error, want events.Code, secrets ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("err = nil; want code %s", want)
	}
	if got := events.ErrorCode(err); got != want {
		t.Fatalf("code = %s; want %s (err: %v)", got, want, err)
	}
	mustHoldNoSecret(t, err, secrets...)
}

// mustHoldNoSecret asserts that neither the error text nor its user-facing message holds
// any of the secrets.
func mustHoldNoSecret(t *testing.T, err error, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		if s == "" {
			continue
		}
		if strings.Contains(err.Error(), s) || strings.Contains(events.ErrorMessage(err), s) {
			t.Fatalf("error holds a password: %v", err)
		}
	}
}

func (r *run) testPrepareOK(t *testing.T) {
	uid := r.newUID()
	r.prepare(t, uid)
	r.prepare(t, uid) // idempotent: refreshes the grants
}

func (r *run) testPrepareUngrantable(t *testing.T) {
	r.mustRefuse(t, r.s.Ungrantable)
}

func (r *run) testPrepareNoSuchTable(t *testing.T) {
	g := r.s.Grants[0]
	g.Tables = []string{"no_such_table"}
	r.mustRefuse(t, g)
}

// testPrepareRefusedAtTheSecondGrant: a good first grant does not make a target with a
// bad second one registrable, nor leave anything of it.
func (r *run) testPrepareRefusedAtTheSecondGrant(t *testing.T) {
	g := r.s.Grants[0]
	g.Tables = []string{"no_such_table"}
	r.mustRefuse(t, r.s.Grants[0], g)
}

// mustRefuse asserts that a new target with grants is refused as unverified and that
// the refusal leaves nothing of the target on the server: a registration an operator
// retries until it is right must not leave a role per attempt (nor, on PostgreSQL, one
// more membership of the admin's).
func (r *run) mustRefuse(t *testing.T, grants ...events.Grant) {
	t.Helper()
	uid := r.newUID()
	err := r.d.Prepare(ctxFor(t), driver.PrepareRequest{Conn: r.h.Admin, RecordUID: uid, Grants: grants, New: true})
	mustCode(t, err, events.ETargetUnverified, r.h.Admin.Password)
	t.Logf("message: %s", events.ErrorMessage(err))
	exists, err := r.h.RoleExists(ctxFor(t), "syvault_"+uid)
	if err != nil {
		t.Fatal(err)
	}
	if exists {
		t.Fatalf("a refused target left its role syvault_%s on the server", uid)
	}
}

func (r *run) testLoginSelectInsert(t *testing.T) {
	uid := r.newUID()
	r.prepare(t, uid)
	user, password := r.mustCreate(t, uid)
	sess := r.mustLogin(t, user, password)
	mustExec(t, sess, "SELECT id FROM "+r.s.Granted)
	mustExec(t, sess, "INSERT INTO "+r.s.Granted+" (id) VALUES (1)")
}

func (r *run) testUngrantedDenied(t *testing.T) {
	uid := r.newUID()
	r.prepare(t, uid)
	user, password := r.mustCreate(t, uid)
	sess := r.mustLogin(t, user, password)
	if err := sess.Exec(ctxFor(t), "SELECT id FROM "+r.s.Denied); err == nil {
		t.Fatalf("SELECT on the ungranted table succeeded")
	}
	if err := sess.Exec(ctxFor(t), "INSERT INTO "+r.s.Denied+" (id) VALUES (1)"); err == nil {
		t.Fatalf("INSERT on the ungranted table succeeded")
	}
}

func (r *run) testWrongPassword(t *testing.T) {
	uid := r.newUID()
	r.prepare(t, uid)
	user, password := r.mustCreate(t, uid)
	r.mustNotLogin(t, user, password+"x")
	r.mustNotLogin(t, user, "")
	r.mustLogin(t, user, password)
}

func (r *run) testCreateTwice(t *testing.T) {
	uid := r.newUID()
	r.prepare(t, uid)
	user, first := r.mustCreate(t, uid)
	second := NewPassword()
	if err := r.d.CreateUser(ctxFor(t), r.createReq(uid, user, second, r.s.Grants)); err != nil {
		t.Fatalf("second CreateUser: %v", err)
	}
	r.mustNotLogin(t, user, first)
	sess := r.mustLogin(t, user, second)
	mustExec(t, sess, "SELECT id FROM "+r.s.Granted)
}

func (r *run) testCreateWithoutPrepare(t *testing.T) {
	user, password := r.mustCreate(t, r.newUID())
	sess := r.mustLogin(t, user, password)
	mustExec(t, sess, "SELECT id FROM "+r.s.Granted)
}

func (r *run) testSchemaWide(t *testing.T) {
	grants := []events.Grant{{Database: r.s.Database, Schema: r.s.Schema, Privileges: []string{"SELECT"}}}
	uid := r.newUID()
	if err := r.d.Prepare(ctxFor(t), driver.PrepareRequest{Conn: r.h.Admin, RecordUID: uid, Grants: grants}); err != nil {
		// The harness keeps ungrantable tables out of the scratch schema.
		t.Fatalf("Prepare: %v", err)
	}
	later := "later_" + strings.ToLower(base62(6))
	ref := later
	if r.s.Schema != "" {
		ref = r.s.Schema + "." + later
	}
	if err := r.h.AdminExec(ctxFor(t), r.s, "CREATE TABLE "+ref+" (id integer)"); err != nil {
		t.Fatalf("create a table after Prepare: %v", err)
	}
	user, password := NewUsername(), NewPassword()
	r.dropInCleanup(t, user)
	if err := r.d.CreateUser(ctxFor(t), r.createReq(uid, user, password, grants)); err != nil {
		t.Fatalf("CreateUser: %v", err)
	}
	sess := r.mustLogin(t, user, password)
	mustExec(t, sess, "SELECT id FROM "+r.s.Granted)
	mustExec(t, sess, "SELECT id FROM "+ref)
	if err := sess.Exec(ctxFor(t), "INSERT INTO "+ref+" (id) VALUES (1)"); err == nil {
		t.Fatalf("INSERT succeeded with a SELECT-only grant")
	}
}

func (r *run) testBadGrantLeavesNoUser(t *testing.T) {
	g := r.s.Grants[0]
	g.Tables = []string{"no_such_table"}
	user, password := NewUsername(), NewPassword()
	r.dropInCleanup(t, user)
	err := r.d.CreateUser(ctxFor(t), r.createReq(r.newUID(), user, password, []events.Grant{g}))
	if err == nil {
		t.Fatalf("CreateUser with a grant on a missing table succeeded")
	}
	mustHoldNoSecret(t, err, password, r.h.Admin.Password)
	t.Logf("error: %v", err)
	r.mustNotLogin(t, user, password)
}

// testConnectionLimit: a user made with a connection limit of 2 holds two sessions and
// is refused a third, while the admin still works; made again (an earlier attempt's
// user), it keeps the limit; without one it holds more.
func (r *run) testConnectionLimit(t *testing.T) {
	uid := r.newUID()
	r.prepare(t, uid)
	user, password := NewUsername(), NewPassword()
	r.dropInCleanup(t, user)
	req := r.createReq(uid, user, password, r.s.Grants)
	req.ConnectionLimit = 2
	for range 2 { // the second is the create of an earlier attempt's user
		if err := r.d.CreateUser(ctxFor(t), req); err != nil {
			t.Fatalf("CreateUser: %v", err)
		}
	}
	r.mustLogin(t, user, password)
	r.mustLogin(t, user, password)
	r.mustNotLogin(t, user, password)
	other, otherPassword := r.mustCreate(t, uid)
	for range 3 {
		r.mustLogin(t, other, otherPassword)
	}
	if err := r.drop(ctxFor(t), user); err != nil {
		t.Fatalf("DropUser at its limit: %v", err)
	}
}

func (r *run) testRenew(t *testing.T) {
	uid := r.newUID()
	r.prepare(t, uid)
	user, password := r.mustCreate(t, uid)
	renew := func(at time.Time) {
		t.Helper()
		err := r.d.RenewUser(ctxFor(t), driver.RenewUserRequest{Conn: r.h.Admin, Username: user, ExpiresAt: at})
		if err != nil {
			t.Fatalf("RenewUser: %v", err)
		}
	}
	renew(time.Now().Add(2 * time.Hour))
	r.mustLogin(t, user, password)
	if !r.h.Expires {
		return
	}
	renew(time.Now().Add(-time.Minute))
	r.mustNotLogin(t, user, password)
	renew(time.Now().Add(time.Hour))
	r.mustLogin(t, user, password)
}

func (r *run) testDropTerminates(t *testing.T) {
	uid := r.newUID()
	r.prepare(t, uid)
	user, password := r.mustCreate(t, uid)
	sess := r.mustLogin(t, user, password)
	mustExec(t, sess, "SELECT id FROM "+r.s.Granted)
	if err := r.drop(ctxFor(t), user); err != nil {
		t.Fatalf("DropUser: %v", err)
	}
	// The contract: once DropUser returned nil the session is already gone, so the very
	// next statement fails. No waiting.
	if err := sess.Exec(ctxFor(t), "SELECT id FROM "+r.s.Granted); err == nil {
		t.Fatalf("the open session still runs statements after DropUser")
	}
	r.mustNotLogin(t, user, password)
}

func (r *run) testDropOwner(t *testing.T) {
	uid := r.newUID()
	r.prepare(t, uid)
	user, password := r.mustCreate(t, uid)
	if err := r.h.AllowCreate(ctxFor(t), r.s, user); err != nil {
		t.Fatalf("AllowCreate: %v", err)
	}
	sess := r.mustLogin(t, user, password)
	if r.h.ActAsUser != "" {
		mustExec(t, sess, r.h.ActAsUser)
	}
	mustExec(t, sess, "CREATE TABLE "+r.s.NewTable+" (id integer)")
	mustExec(t, sess, "INSERT INTO "+r.s.NewTable+" (id) VALUES (1)")
	if err := r.drop(ctxFor(t), user); err != nil {
		t.Fatalf("DropUser of a user owning a table: %v", err)
	}
	r.mustNotLogin(t, user, password)
}

func (r *run) testDropMissing(t *testing.T) {
	if err := r.drop(ctxFor(t), NewUsername()); err != nil {
		t.Fatalf("DropUser of a missing user: %v", err)
	}
}

// testConcurrent creates 16 users of one target at once, checks each can log in, then
// drops them at once and checks none can. Without prepare, the 16 creates race to set up
// the target's shared state.
func (r *run) testConcurrent(t *testing.T, prepare bool) {
	const n = 16
	uid := r.newUID()
	if prepare {
		r.prepare(t, uid)
	}
	ctx := ctxFor(t)
	users, passwords := make([]string, n), make([]string, n)
	for i := range users {
		users[i], passwords[i] = NewUsername(), NewPassword()
		r.dropInCleanup(t, users[i])
	}
	errs := parallel(n, func(i int) error {
		return r.d.CreateUser(ctx, r.createReq(uid, users[i], passwords[i], r.s.Grants))
	})
	for i, err := range errs {
		if err != nil {
			t.Errorf("CreateUser %d: %v", i, err)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	for i := range users {
		sess := r.mustLogin(t, users[i], passwords[i])
		mustExec(t, sess, "SELECT id FROM "+r.s.Granted)
		_ = sess.Close()
	}
	errs = parallel(n, func(i int) error { return r.drop(ctx, users[i]) })
	for i, err := range errs {
		if err != nil {
			t.Errorf("DropUser %d: %v", i, err)
		}
	}
	for i := range users {
		r.mustNotLogin(t, users[i], passwords[i])
	}
}

// parallel runs fn(0..n-1) on n goroutines released together and returns their errors.
func parallel(n int, fn func(i int) error) []error {
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			errs[i] = fn(i)
		})
	}
	close(start)
	wg.Wait()
	return errs
}

// FreePort returns a loopback TCP port nothing listens on.
func FreePort(tb testing.TB) int {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("listen: %v", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		tb.Fatalf("close listener: %v", err)
	}
	return port
}

// every calls each driver method with admin and returns the errors by method name.
func (r *run) every(t *testing.T, admin driver.Conn, userPassword string) map[string]error {
	ctx := ctxFor(t)
	uid, user := r.newUID(), NewUsername()
	create := r.createReq(uid, user, userPassword, r.s.Grants)
	create.Conn = admin
	return map[string]error{
		"Prepare":    r.d.Prepare(ctx, driver.PrepareRequest{Conn: admin, RecordUID: uid, Grants: r.s.Grants}),
		"CreateUser": r.d.CreateUser(ctx, create),
		"RenewUser":  r.d.RenewUser(ctx, driver.RenewUserRequest{Conn: admin, Username: user, ExpiresAt: time.Now()}),
		"DropUser":   r.d.DropUser(ctx, driver.DropUserRequest{Conn: admin, Username: user, Grants: r.s.Grants}),
	}
}

func (r *run) testUnreachable(t *testing.T) {
	admin := r.h.Admin
	admin.Port = FreePort(t)
	admin.PoolKey = fmt.Sprintf("%s-unreachable-%d", admin.PoolKey, admin.Port)
	password := NewPassword()
	for name, err := range r.every(t, admin, password) {
		if name == "RenewUser" && err == nil && !r.h.Expires {
			continue // engines without expiry need no connection to renew
		}
		t.Run(name, func(t *testing.T) {
			if name == "Prepare" {
				// Registration says what to fix: a 422 naming host and port.
				mustCode(t, err, events.ETargetUnverified, admin.Password, password)
				mustMention(t, err, "port")
				return
			}
			mustCode(t, err, events.ETargetUnavailable, admin.Password, password)
		})
	}
}

// mustMention asserts the user-facing message names what to fix.
func mustMention(t *testing.T, err error, what string) {
	t.Helper()
	if !strings.Contains(events.ErrorMessage(err), what) {
		t.Fatalf("message %q does not mention %q", events.ErrorMessage(err), what)
	}
}

func (r *run) testWrongAdminPassword(t *testing.T) {
	admin := r.h.Admin
	admin.Password = "wrong-" + base62(16)
	admin.PoolKey += "-wrong-password"
	password := NewPassword()
	for name, err := range r.every(t, admin, password) {
		if name == "RenewUser" && err == nil && !r.h.Expires {
			continue
		}
		t.Run(name, func(t *testing.T) {
			want := events.ETargetUnavailable
			if name == "Prepare" {
				want = events.ETargetUnverified
				defer mustMention(t, err, "admin_password")
			}
			mustCode(t, err, want, admin.Password, r.h.Admin.Password, password)
			if errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("a refused login should fail fast, not time out: %v", err)
			}
		})
	}
}

// testListUsers checks that a target's listing holds exactly its own lease users as
// marked: not another target's, not the admin, not a user named like a lease user that
// the driver did not make (which appears, unmarked, only when asked for).
func (r *run) testListUsers(t *testing.T) {
	lister, ok := r.d.(driver.UserLister)
	if !ok {
		t.Skip("the driver does not list its users")
	}
	ctx := ctxFor(t)
	uid, other := r.newUID(), r.newUID()
	r.prepare(t, uid)
	a1, _ := r.mustCreate(t, uid)
	a2, _ := r.mustCreate(t, uid)
	b1, _ := r.mustCreate(t, other)
	foreign := NewUsername()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
		defer cancel()
		if err := r.h.AdminExec(ctx, r.s, "DROP USER IF EXISTS "+foreign); err != nil {
			t.Errorf("drop %s: %v", foreign, err)
		}
	})
	if err := r.h.AdminExec(ctx, r.s, "CREATE USER "+foreign); err != nil {
		t.Fatalf("create a user named like a lease user: %v", err)
	}
	list := func(unmarked bool) map[string]bool {
		t.Helper()
		users, err := lister.ListUsers(ctx, driver.ListUsersRequest{Conn: r.h.Admin, RecordUID: uid, Unmarked: unmarked})
		if err != nil {
			t.Fatalf("ListUsers: %v", err)
		}
		out := map[string]bool{}
		for _, u := range users {
			out[u.Username] = u.Marked
		}
		return out
	}
	got := list(false)
	if len(got) != 2 || !got[a1] || !got[a2] {
		t.Fatalf("ListUsers = %v; want exactly %s and %s, marked", got, a1, a2)
	}
	got = list(true)
	if marked, ok := got[foreign]; !ok || marked {
		t.Errorf("with unmarked users: %s listed %v, marked %v; want listed, unmarked", foreign, ok, marked)
	}
	if _, ok := got[b1]; ok {
		t.Errorf("another target's user %s is listed", b1)
	}
	if _, ok := got[r.h.Admin.Username]; ok {
		t.Errorf("the admin is listed")
	}
	if err := r.drop(ctx, a1); err != nil {
		t.Fatal(err)
	}
	if got := list(false); len(got) != 1 || !got[a2] {
		t.Fatalf("after dropping %s, ListUsers = %v; want only %s", a1, got, a2)
	}
}
