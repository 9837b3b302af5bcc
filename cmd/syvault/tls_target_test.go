package main

import (
	"context"
	"os"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/syvault/syvault/http/client"
	"github.com/syvault/syvault/workers/drivertest"
)

// TestTarget_TLSModes: tls_mode require encrypts the admin connection; verify-full checks
// the server's certificate against ca_cert and the host name.
func TestTarget_TLSModes(t *testing.T) {
	eng := postgresEngine(t)
	ctx := context.Background()
	super, err := pgx.Connect(ctx, "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable")
	requireDB(t, "PostgreSQL on 127.0.0.1:5432", err)
	t.Cleanup(func() { super.Close(context.Background()) }) // after the cleanup below, which uses it
	var ssl, certFile string
	if err := super.QueryRow(ctx, "SELECT current_setting('ssl'), current_setting('ssl_cert_file')").Scan(&ssl, &certFile); err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(certFile)
	if ssl != "on" || err != nil {
		t.Skipf("the local PostgreSQL does not serve TLS (ssl=%s, %v): nothing to test here", ssl, err)
	}
	admin := "sv_tls_" + randomSecret()[:8]
	if _, err := super.Exec(ctx, "CREATE ROLE "+admin+" LOGIN SUPERUSER"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = super.Exec(context.Background(), "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", admin)
		if _, err := super.Exec(context.Background(), "DROP ROLE IF EXISTS "+admin); err != nil {
			t.Errorf("drop the test's admin role: %v", err)
		}
	})

	srv := mustServer(t, "", nil)
	c := srv.admin(t)
	target := func(host, mode, ca string) client.Target {
		tg := eng.target(t)
		tg.Host, tg.TLSMode, tg.CACert, tg.AdminUsername = host, mode, ca, admin
		return tg
	}

	t.Run("require encrypts the admin connection", func(t *testing.T) {
		tg, err := c.CreateTarget(ctx, target("127.0.0.1", "require", ""))
		if err != nil {
			t.Fatal(err)
		}
		l := mustLease(t, c, tg.RecordUID, 60)
		var plain, encrypted int
		if err := super.QueryRow(ctx, `SELECT count(*) FILTER (WHERE NOT s.ssl), count(*) FILTER (WHERE s.ssl)
			FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) WHERE a.usename = $1`, admin).Scan(&plain, &encrypted); err != nil {
			t.Fatal(err)
		}
		if plain != 0 || encrypted == 0 {
			t.Fatalf("admin sessions: %d plain, %d encrypted", plain, encrypted)
		}
		if err := c.RevokeLease(ctx, l.LeaseID); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("verify-full trusts the given CA for the certificate's name", func(t *testing.T) {
		tg, err := c.CreateTarget(ctx, target("localhost", "verify-full", string(caPEM)))
		if err != nil {
			t.Fatal(err)
		}
		l := mustLease(t, c, tg.RecordUID, 60)
		if err := c.RevokeLease(ctx, l.LeaseID); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("verify-full with another CA refuses the server", func(t *testing.T) {
		// (Without ca_cert the system roots apply, and Debian's include this snakeoil one.)
		_, err := c.CreateTarget(ctx, target("localhost", "verify-full", drivertest.NewCA(t).PEM))
		mustCode(t, err, 422, "target_unverified")
		mustMention(t, err, "ca_cert")
	})
	t.Run("verify-full refuses a name the certificate does not hold", func(t *testing.T) {
		_, err := c.CreateTarget(ctx, target("127.0.0.1", "verify-full", string(caPEM)))
		mustCode(t, err, 422, "target_unverified")
		mustMention(t, err, "not valid for")
	})
}
