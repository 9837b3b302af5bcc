// Package pgtest makes private PostgreSQL clusters that check passwords, for the tests
// and the chaos run. The shared server a developer has (and CI) trusts every local
// login, so nothing that depends on a password being checked can be tried there; a
// cluster made here uses scram-sha-256 for every connection.
package pgtest

import (
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
)

// DefaultBin is where the server binaries are looked for unless PG_BIN says otherwise.
const DefaultBin = "/usr/lib/postgresql/15/bin"

// Bin returns the directory of the server binaries: $PG_BIN, else DefaultBin.
func Bin() string {
	if dir := os.Getenv("PG_BIN"); dir != "" {
		return dir
	}
	return DefaultBin
}

// CheckBin reports the first of names that bin does not hold.
func CheckBin(bin string, names ...string) error {
	for _, name := range names {
		if _, err := os.Stat(filepath.Join(bin, name)); err != nil {
			return fmt.Errorf("PostgreSQL binaries not found under %s (set PG_BIN): %w", bin, err)
		}
	}
	return nil
}

// OSUser returns the credential to run a database server as the OS user name when this
// process runs as root (PostgreSQL and MariaDB refuse to run as root), or nil.
func OSUser(name string) (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup(name)
	if err != nil {
		return nil, fmt.Errorf("running as root and no %s OS user to run the server as: %w", name, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// MkOwnedDir makes dir, owned by cred's user when there is one.
func MkOwnedDir(dir string, cred *syscall.Credential) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	return chown(dir, cred)
}

func chown(path string, cred *syscall.Credential) error {
	if cred == nil {
		return nil
	}
	return os.Chown(path, int(cred.Uid), int(cred.Gid))
}

// Run runs argv as cred's user (nil: as this process) and waits for it; its output is in
// the error. The process dies with this one.
func Run(cred *syscall.Credential, argv ...string) error {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGKILL}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %w: %s", filepath.Base(argv[0]), err, out)
	}
	return nil
}

// InitDB makes a cluster in data, a directory to be made under dir (which cred's user
// must own), whose superuser postgres has the password superPW and whose every login is
// checked with scram-sha-256. The password reaches initdb through a file that is removed
// when it is done, never through its arguments.
func InitDB(bin, dir, data, superPW string, cred *syscall.Credential) error {
	pwfile := filepath.Join(dir, "pw")
	if err := os.WriteFile(pwfile, []byte(superPW+"\n"), 0o600); err != nil {
		return err
	}
	defer os.Remove(pwfile)
	if err := chown(pwfile, cred); err != nil {
		return err
	}
	return Run(cred, filepath.Join(bin, "initdb"), "--auth=scram-sha-256", "--pwfile="+pwfile, "-U", "postgres",
		"-D", data, "--no-sync", "-E", "UTF8", "--locale=C")
}
