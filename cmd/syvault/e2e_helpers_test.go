package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"database/sql"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/golang-jwt/jwt/v5"
	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/syvault/syvault/events"
	"github.com/syvault/syvault/http/client"
	"github.com/syvault/syvault/internal/logbuf"
	"github.com/syvault/syvault/workers/drivertest"
)

// requireDB fails under CI=true and skips elsewhere, so a missing database is never a
// silent pass in CI.
func requireDB(tb testing.TB, what string, err error) {
	tb.Helper()
	if err == nil {
		return
	}
	if os.Getenv("CI") == "true" {
		tb.Fatalf("%s is required (CI=true): %v", what, err)
	}
	tb.Skipf("%s unreachable, skipping: %v", what, err)
}

// testServer is one SyVault process run through the real wiring.
type testServer struct {
	*Main
	Log *logbuf.Buffer
	Dir string
}

// mustServer opens a dev-mode server on a free port with its data in dir (new when
// empty); mutate adjusts its Config. It is closed when the test ends.
func mustServer(tb testing.TB, dir string, mutate func(*Config)) *testServer {
	tb.Helper()
	if dir == "" {
		dir = tb.TempDir()
	}
	cfg := Config{Dev: true, DataDir: dir, Listen: "127.0.0.1:0", Replicas: 1, RequestTimeout: 15 * time.Second, Components: []string{"all"}}
	if mutate != nil {
		mutate(&cfg)
	}
	logs := &logbuf.Buffer{}
	m := NewMain(cfg, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err := m.Open(context.Background()); err != nil {
		_ = m.Close()
		tb.Fatalf("open server: %v\n%s", err, logs)
	}
	tb.Cleanup(func() { noteCreatedUsers(logs.String()) }) // after Close: see TestMain
	tb.Cleanup(func() { logWarnings(tb, logs.String()) })
	tb.Cleanup(func() { _ = m.Close() })
	srv := &testServer{Main: m, Log: logs, Dir: dir}
	if cfg.runs("api") && cfg.Dev {
		// Registered after Close, so it runs before it: tests end what they started, and
		// a failed test leaves no user in the shared databases either.
		tb.Cleanup(func() { srv.revokeAll(tb) })
	}
	return srv
}

// logWarnings puts a failed test's server warnings and errors (the last 40) in its
// output: a failure's cause (a driver's error behind a 500, say) is often only there.
func logWarnings(tb testing.TB, log string) {
	if !tb.Failed() {
		return
	}
	var lines []string
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, "level=WARN") || strings.Contains(l, "level=ERROR") {
			lines = append(lines, l)
		}
	}
	lines = lines[max(0, len(lines)-40):]
	tb.Logf("the server's warnings and errors (%d shown):\n%s", len(lines), strings.Join(lines, "\n"))
}

// adminClient reads the admin credentials --dev wrote.
func (s *testServer) adminClient(tb testing.TB) AdminClient {
	tb.Helper()
	data, err := os.ReadFile(filepath.Join(s.Dir, AdminClientFile))
	if err != nil {
		tb.Fatal(err)
	}
	var ac AdminClient
	if err := json.Unmarshal(data, &ac); err != nil {
		tb.Fatal(err)
	}
	return ac
}

// forgeToken signs claims with the deployment's current token key, as the server does, so
// a token it makes is refused only for what its claims say.
func (s *testServer) forgeToken(tb testing.TB, claims jwt.RegisteredClaims) string {
	tb.Helper()
	kid, key := s.tokens.Signing()
	tok := jwt.NewWithClaims(jwt.SigningMethodHS256, claims)
	tok.Header["kid"] = kid
	signed, err := tok.SignedString(key)
	if err != nil {
		tb.Fatal(err)
	}
	return signed
}

// revokeAll revokes every lease still active, best effort (the test may have stopped
// NATS or the database on purpose).
func (s *testServer) revokeAll(tb testing.TB) {
	if s.nc == nil || !s.nc.IsConnected() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	page, _, err := s.proj.ActiveLeases(ctx, events.LeaseQuery{Limit: 1000})
	if err != nil || len(page) == 0 {
		return
	}
	admin := s.admin(tb)
	for _, l := range page {
		if err := admin.RevokeLease(ctx, l.ID); err != nil {
			tb.Logf("cleanup: lease %s may have left a database user: %v", l.ID, err)
		}
	}
	// A target's scratch database is usually made after the server, so its cleanup ran
	// first and kept the group these users were still in: drop it now they are gone.
	noteCreatedUsers(s.Log.String())
	withLocalPostgres(dropIdleGroups)
}

// admin returns a client authenticated as the bootstrap admin.
func (s *testServer) admin(tb testing.TB) *client.Client {
	tb.Helper()
	ac := s.adminClient(tb)
	c, err := client.New(s.HTTP.URL(), ac.ClientID, ac.PrivateKey)
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// session is an open database connection made with lease credentials.
type session interface {
	Exec(ctx context.Context, sql string) error
	Close()
}

// engine is a database the end-to-end tests lease users on.
type engine struct {
	name string
	// target returns a target for a fresh scratch database with a table "granted" the
	// target grants SELECT and INSERT on, and a table "secret" it does not.
	target func(tb testing.TB) client.Target
	// login opens a session with a lease's connection string.
	login func(ctx context.Context, connString string) (session, error)
	// userExists asks the database, as its superuser, whether a user exists.
	userExists func(ctx context.Context, username string) (bool, error)
	// admin runs a statement as the database superuser.
	admin func(ctx context.Context, stmt string) error
	// adminIn runs a statement as the database superuser in the database db (PostgreSQL;
	// MySQL runs it in none).
	adminIn func(db, stmt string) error
	// dropMarkerRoles drops the marker roles an admin of a test's own made, and their
	// holders, before the test drops that admin (MySQL; PostgreSQL has none).
	dropMarkerRoles func(admin string)
}

func scratchName() string {
	return fmt.Sprintf("syvault_e2e_%d_%d", time.Now().UnixNano()%1e9, mrand.IntN(1e6))
}

// postgresEngine uses the local PostgreSQL (trust auth for the superuser; see the driver
// suite for password checks against a scram-sha-256 cluster).
func postgresEngine(tb testing.TB) engine {
	tb.Helper()
	ctx := context.Background()
	super := func(db string) (*pgx.Conn, error) {
		return pgx.Connect(ctx, "postgres://postgres@127.0.0.1:5432/"+db+"?sslmode=disable")
	}
	conn, err := super("postgres")
	requireDB(tb, "PostgreSQL on 127.0.0.1:5432", err)
	conn.Close(ctx)
	exec := func(db, stmt string) error {
		c, err := super(db)
		if err != nil {
			return err
		}
		defer c.Close(ctx)
		_, err = c.Exec(ctx, stmt)
		return err
	}
	return engine{
		name: "postgresql",
		target: func(tb testing.TB) client.Target {
			db := scratchName()
			if err := exec("postgres", "CREATE DATABASE "+db); err != nil {
				tb.Fatal(err)
			}
			tb.Cleanup(func() { dropScratch(db) })
			if err := exec(db, "CREATE TABLE granted (id int, v text); CREATE TABLE secret (id int); INSERT INTO secret VALUES (42)"); err != nil {
				tb.Fatal(err)
			}
			return client.Target{Name: "e2e-pg-" + db, Engine: "postgresql", Host: "127.0.0.1", Port: 5432, Database: db,
				AdminUsername: "postgres", AdminPassword: "pg-admin-" + randomSecret(), TLSMode: "disable",
				Grants: []client.Grant{{Database: db, Schema: "public", Tables: []string{"granted"}, Privileges: []string{"SELECT", "INSERT"}}}}
		},
		login: func(ctx context.Context, cs string) (session, error) {
			c, err := pgx.Connect(ctx, cs+"?sslmode=disable")
			if err != nil {
				return nil, err
			}
			return pgSession{c}, nil
		},
		userExists: func(ctx context.Context, user string) (bool, error) {
			c, err := super("postgres")
			if err != nil {
				return false, err
			}
			defer c.Close(ctx)
			var n int
			err = c.QueryRow(ctx, "SELECT count(*) FROM pg_roles WHERE rolname = $1", user).Scan(&n)
			return n > 0, err
		},
		admin:           func(ctx context.Context, stmt string) error { return exec("postgres", stmt) },
		adminIn:         exec,
		dropMarkerRoles: func(string) {},
	}
}

// dropScratch drops the PostgreSQL scratch database db, then the group roles its targets
// made that no lease user belongs to any more (the admin is a member of each): they are
// cluster-wide and outlive the database.
func dropScratch(db string) {
	withLocalPostgres(func(ctx context.Context, c *pgx.Conn) {
		noteScratchGroups(ctx, c, db)
		_, _ = c.Exec(ctx, "DROP DATABASE IF EXISTS "+db+" WITH (FORCE)")
		dropIdleGroups(ctx, c)
	})
}

type pgSession struct{ c *pgx.Conn }

func (s pgSession) Exec(ctx context.Context, stmt string) error {
	_, err := s.c.Exec(ctx, stmt)
	return err
}
func (s pgSession) Close() { s.c.Close(context.Background()) }

// mysqlEngine uses the local MariaDB, which checks the passwords of the users SyVault
// creates.
func mysqlEngine(tb testing.TB) engine {
	tb.Helper()
	root, err := sql.Open("mysql", "root@tcp(127.0.0.1:3306)/")
	if err == nil {
		err = root.Ping()
	}
	requireDB(tb, "MariaDB on 127.0.0.1:3306", err)
	tb.Cleanup(func() { root.Close() })
	adminIn := func(_, stmt string) error { _, err := root.Exec(stmt); return err }
	return engine{
		name: "mysql",
		target: func(tb testing.TB) client.Target {
			db := scratchName()
			for _, stmt := range []string{"CREATE DATABASE " + db, "CREATE TABLE " + db + ".granted (id int, v text)",
				"CREATE TABLE " + db + ".secret (id int)", "INSERT INTO " + db + ".secret VALUES (42)"} {
				if _, err := root.Exec(stmt); err != nil {
					tb.Fatal(err)
				}
			}
			tb.Cleanup(func() { _, _ = root.Exec("DROP DATABASE IF EXISTS " + db) })
			// A dedicated admin with a password MariaDB checks, made with the README's
			// statements, with the privileges the tests' grants name (migrations included).
			adminUser, adminPassword := "sv_adm_"+db[len(db)-6:], "my-admin-"+randomSecret()
			tb.Cleanup(func() {
				drivertest.DropMarkerRoles(root, adminUser)
				_, _ = root.Exec("DROP USER IF EXISTS '" + adminUser + "'@'%'")
			})
			runAdminStatements(tb, adminStatements(tb, "mysql", adminNames{Admin: adminUser, Password: adminPassword, Database: db,
				Privileges: "SELECT, INSERT, UPDATE, DELETE, CREATE, ALTER, INDEX"}), "", adminIn)
			return client.Target{Name: "e2e-mysql-" + db, Engine: "mysql", Host: "127.0.0.1", Port: 3306, Database: db,
				AdminUsername: adminUser, AdminPassword: adminPassword, TLSMode: "disable",
				Grants: []client.Grant{{Database: db, Tables: []string{"granted"}, Privileges: []string{"SELECT", "INSERT"}}}}
		},
		login: func(ctx context.Context, cs string) (session, error) {
			u, err := url.Parse(cs)
			if err != nil {
				return nil, err
			}
			pw, _ := u.User.Password()
			cfg := mysql.NewConfig()
			cfg.User, cfg.Passwd, cfg.Net, cfg.Addr, cfg.DBName = u.User.Username(), pw, "tcp", u.Host, strings.TrimPrefix(u.Path, "/")
			db, err := sql.Open("mysql", cfg.FormatDSN())
			if err != nil {
				return nil, err
			}
			db.SetMaxOpenConns(1)
			if err := db.PingContext(ctx); err != nil {
				db.Close()
				return nil, err
			}
			return mysqlSession{db}, nil
		},
		userExists: func(ctx context.Context, user string) (bool, error) {
			var n int
			err := root.QueryRowContext(ctx, "SELECT count(*) FROM mysql.user WHERE user = ?", user).Scan(&n)
			return n > 0, err
		},
		admin:           func(ctx context.Context, stmt string) error { _, err := root.ExecContext(ctx, stmt); return err },
		adminIn:         adminIn,
		dropMarkerRoles: func(admin string) { drivertest.DropMarkerRoles(root, admin) },
	}
}

type mysqlSession struct{ db *sql.DB }

func (s mysqlSession) Exec(ctx context.Context, stmt string) error {
	_, err := s.db.ExecContext(ctx, stmt)
	return err
}
func (s mysqlSession) Close() { s.db.Close() }

func randomSecret() string { return fmt.Sprintf("%016x%016x", mrand.Uint64(), mrand.Uint64()) }

// eventually polls cond until it holds or the deadline passes.
func eventually(tb testing.TB, within time.Duration, what string, cond func() (bool, error)) {
	tb.Helper()
	deadline := time.Now().Add(within)
	delay := 10 * time.Millisecond
	for {
		ok, err := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%s: not within %v (last error: %v)", what, within, err)
		}
		time.Sleep(delay) // polling interval of a deadline-bounded wait, not synchronisation
		delay = min(2*delay, 200*time.Millisecond)
	}
}

func mustCode(tb testing.TB, err error, status int, code string) {
	tb.Helper()
	ce, ok := err.(*client.Error)
	if !ok {
		tb.Fatalf("err = %v (%T), want %d %s", err, err, status, code)
	}
	if ce.Status != status || ce.Code != code || ce.Message == "" {
		tb.Fatalf("err = %+v, want %d %s with a message", ce, status, code)
	}
}

// mustMention fails unless err's message names what to fix.
func mustMention(tb testing.TB, err error, what string) {
	tb.Helper()
	if ce, ok := err.(*client.Error); !ok || !strings.Contains(ce.Message, what) {
		tb.Fatalf("err = %v; want a message mentioning %q", err, what)
	}
}

// mustTarget registers a fresh target of eng.
func mustTarget(tb testing.TB, c *client.Client, eng engine) *client.Target {
	tb.Helper()
	return mustRegister(tb, c, eng.target(tb))
}

// mustRegister registers the target tg, for a test that needs its settings too.
func mustRegister(tb testing.TB, c *client.Client, tg client.Target) *client.Target {
	tb.Helper()
	t, err := c.CreateTarget(context.Background(), tg)
	if err != nil {
		tb.Fatal(err)
	}
	return t
}

// mustLease creates a lease.
func mustLease(tb testing.TB, c *client.Client, recordUID string, ttl int) *client.Lease {
	tb.Helper()
	l, err := c.CreateLease(context.Background(), recordUID, ttl)
	if err != nil {
		tb.Fatal(err)
	}
	return l
}

// mustBeGone fails unless the database user is gone (now, or within the given time).
func mustBeGone(tb testing.TB, eng engine, username string, within time.Duration) {
	tb.Helper()
	eventually(tb, within, "user "+username+" dropped", func() (bool, error) {
		ok, err := eng.userExists(context.Background(), username)
		return !ok && err == nil, err
	})
}

// mustKeyPair returns a fresh Ed25519 key pair as PKIX and PKCS#8 PEM.
func mustKeyPair(tb testing.TB) (pubPEM, privPEM string) {
	tb.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	pubDER, _ := x509.MarshalPKIXPublicKey(pub)
	privDER, _ := x509.MarshalPKCS8PrivateKey(priv)
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})),
		string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: privDER}))
}

// jetStream is a JetStream context on the process's own NATS connection, for tests that
// look behind the store's verbs.
func jetStream(tb testing.TB, m *Main) jetstream.JetStream {
	tb.Helper()
	js, err := jetstream.New(m.nc)
	if err != nil {
		tb.Fatal(err)
	}
	return js
}

// eventsStream is the events stream, likewise.
func eventsStream(tb testing.TB, m *Main) jetstream.Stream {
	tb.Helper()
	s, err := jetStream(tb, m).Stream(context.Background(), events.EventsStream)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}
