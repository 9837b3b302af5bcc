package mysql_test

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/syvault/syvault/events"
	"github.com/syvault/syvault/workers/driver"
	"github.com/syvault/syvault/workers/drivertest"
	"github.com/syvault/syvault/workers/mysql"
)

// tlsServer is a private MariaDB serving TLS with a certificate for "localhost" only, whose
// admin account REQUIRES SSL: a plaintext admin connection is refused by the server itself.
type tlsServer struct {
	dir      string // its socket is dir/sock, where root logs in without a password
	port     int
	adminPW  string
	caPEM    string
	database string
}

const tlsAdmin = "vf_tls_admin"

func startTLSServer(t *testing.T) *tlsServer {
	t.Helper()
	for _, bin := range []string{"/usr/bin/mariadb-install-db", "/usr/sbin/mariadbd"} {
		if _, err := os.Stat(bin); err != nil {
			drivertest.Skip(t, "MariaDB server binaries not installed: "+err.Error())
		}
	}
	dir, err := os.MkdirTemp("", "syvault-my-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	s := &tlsServer{dir: dir, adminPW: secret(), database: "tlsdb"}
	ca := drivertest.NewCA(t)
	s.caPEM = ca.PEM
	certPEM, keyPEM := ca.ServerCert(t, "localhost")
	for name, data := range map[string][]byte{"server.pem": certPEM, "server.key": keyPEM} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// mariadbd runs an init file one line, one statement at a time.
	init := fmt.Sprintf(`CREATE USER '%s'@'%%' IDENTIFIED BY '%s' REQUIRE SSL;
GRANT ALL PRIVILEGES ON *.* TO '%s'@'%%' WITH GRANT OPTION;
CREATE DATABASE %s;
CREATE TABLE %s.granted (id int);
`, tlsAdmin, strings.ReplaceAll(s.adminPW, "'", "''"), tlsAdmin, s.database, s.database)
	if err := os.WriteFile(filepath.Join(dir, "init.sql"), []byte(init), 0o600); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "data")
	asRoot := []string{}
	if os.Geteuid() == 0 {
		asRoot = []string{"--user=root"} // mariadbd refuses root unless told
	}
	install := exec.Command("/usr/bin/mariadb-install-db", append([]string{"--no-defaults", "--datadir=" + data,
		"--auth-root-authentication-method=normal", "--skip-test-db"}, asRoot...)...)
	if out, err := install.CombinedOutput(); err != nil {
		t.Fatalf("mariadb-install-db: %v\n%s", err, out)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.port = l.Addr().(*net.TCPAddr).Port
	l.Close()
	srv := exec.Command("/usr/sbin/mariadbd", append([]string{"--no-defaults", "--datadir=" + data,
		fmt.Sprintf("--port=%d", s.port), "--bind-address=127.0.0.1", "--skip-name-resolve",
		"--socket=" + filepath.Join(dir, "sock"), "--pid-file=" + filepath.Join(dir, "pid"),
		"--ssl-cert=" + filepath.Join(dir, "server.pem"), "--ssl-key=" + filepath.Join(dir, "server.key"),
		"--init-file=" + filepath.Join(dir, "init.sql"), "--skip-log-bin", "--log-error=" + filepath.Join(dir, "error.log")}, asRoot...)...)
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- srv.Wait() }()
	stop := func() {
		_ = srv.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			_ = srv.Process.Kill()
			<-exited
		}
	}
	t.Cleanup(stop)
	// Ready once the admin can log in over TLS (the init file has then run).
	deadline := time.Now().Add(60 * time.Second)
	d := mysql.New(nil)
	defer d.Close()
	for {
		err := d.Prepare(t.Context(), driver.PrepareRequest{Conn: s.conn("localhost", events.TLSVerifyFull, s.caPEM, "ready"),
			RecordUID: drivertest.NewRecordUID(), Grants: s.grants()})
		if err == nil {
			return s
		}
		select {
		case err := <-exited:
			log, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			t.Fatalf("mariadbd exited: %v\n%s", err, log)
		default:
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			t.Fatalf("private MariaDB not ready in 60s: %v\n%s", err, log)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (s *tlsServer) conn(host string, mode events.TLSMode, ca, pool string) driver.Conn {
	return driver.Conn{PoolKey: "tls-" + pool, Host: host, Port: s.port, Username: tlsAdmin, Password: s.adminPW, TLSMode: mode, CACert: ca}
}

func (s *tlsServer) grants() []events.Grant {
	return []events.Grant{{Database: s.database, Tables: []string{"granted"}, Privileges: []string{"SELECT"}}}
}

// TestDriver_TLS: tls_mode require and verify-full reach a MariaDB whose admin account
// requires TLS, and a lease user is created and dropped over them; verify-full refuses a
// server signed by another CA or named otherwise than its certificate; disable is
// refused by the server, which shows the other modes really encrypt.
func TestDriver_TLS(t *testing.T) {
	s := startTLSServer(t)
	d := mysql.New(nil)
	t.Cleanup(func() { _ = d.Close() }) // after the cleanups that drop users through it
	ctx := t.Context()
	lifecycle := func(t *testing.T, conn driver.Conn) {
		uid := drivertest.NewRecordUID()
		if err := d.Prepare(ctx, driver.PrepareRequest{Conn: conn, RecordUID: uid, Grants: s.grants()}); err != nil {
			t.Fatal(err)
		}
		user := drivertest.NewUsername()
		if err := d.CreateUser(ctx, driver.CreateUserRequest{Conn: conn, RecordUID: uid, Username: user, Password: drivertest.NewPassword(),
			ExpiresAt: time.Now().Add(time.Minute), Grants: s.grants()}); err != nil {
			t.Fatal(err)
		}
		if err := d.DropUser(ctx, driver.DropUserRequest{Conn: conn, Username: user, Grants: s.grants()}); err != nil {
			t.Fatal(err)
		}
	}
	// Registration refuses with a 422 whose message names what to fix.
	refused := func(t *testing.T, conn driver.Conn, mention string) {
		err := d.Prepare(ctx, driver.PrepareRequest{Conn: conn, RecordUID: drivertest.NewRecordUID(), Grants: s.grants()})
		var e *events.Error
		if !errors.As(err, &e) || e.Code != events.ETargetUnverified {
			t.Fatalf("err = %v, want %s", err, events.ETargetUnverified)
		}
		if !strings.Contains(e.Message, mention) {
			t.Fatalf("message %q does not mention %q", e.Message, mention)
		}
		if strings.Contains(err.Error(), s.adminPW) {
			t.Fatal("the error holds the admin password")
		}
	}
	t.Run("require", func(t *testing.T) { lifecycle(t, s.conn("127.0.0.1", events.TLSRequire, "", "require")) })
	t.Run("verify-full with the CA", func(t *testing.T) { lifecycle(t, s.conn("localhost", events.TLSVerifyFull, s.caPEM, "full")) })
	t.Run("disable is refused by the server", func(t *testing.T) { refused(t, s.conn("127.0.0.1", events.TLSDisable, "", "plain"), "admin_password") })
	t.Run("verify-full refuses another CA", func(t *testing.T) {
		refused(t, s.conn("localhost", events.TLSVerifyFull, drivertest.NewCA(t).PEM, "otherca"), "ca_cert")
	})
	t.Run("verify-full refuses a name the certificate does not hold", func(t *testing.T) {
		refused(t, s.conn("127.0.0.1", events.TLSVerifyFull, s.caPEM, "wrongname"), "not valid for")
	})
	t.Run("verify-full without ca_cert uses the system roots", func(t *testing.T) {
		refused(t, s.conn("localhost", events.TLSVerifyFull, "", "systemroots"), "ca_cert")
	})
}
