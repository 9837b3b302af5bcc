//go:build unix

package cli

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// TestSignalPIDFile_trustsOnlyItsOwn: another user who may write the pid file chooses
// which of this user's processes the agent signals at each rotation.
func TestSignalPIDFile_trustsOnlyItsOwn(t *testing.T) {
	victim := exec.Command("sleep", "30")
	if err := victim.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = victim.Process.Kill(); _ = victim.Wait() })
	pid := []byte(strconv.Itoa(victim.Process.Pid))
	path := filepath.Join(t.TempDir(), "app.pid")

	if err := os.WriteFile(path, pid, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := signalPIDFile(path, syscall.Signal(0)); err != nil {
		t.Fatalf("its own pid file: %v", err)
	}
	// A umask of 002 with a group of the user's own.
	if err := os.Chmod(path, 0o664); err != nil {
		t.Fatal(err)
	}
	if _, err := signalPIDFile(path, syscall.Signal(0)); err != nil {
		t.Fatalf("a pid file its owner's own group may write: %v", err)
	}
	if err := os.Chmod(path, 0o666); err != nil {
		t.Fatal(err)
	}
	if _, err := signalPIDFile(path, syscall.Signal(0)); err == nil || !strings.Contains(err.Error(), "written by anyone") {
		t.Errorf("a pid file anyone may write: %v", err)
	}
	if err := checkPIDFile(path); err == nil {
		t.Error("the agent would start with a pid file anyone may write")
	}
	if err := checkPIDFile(path + ".later"); err != nil {
		t.Errorf("a pid file the application writes later: %v", err)
	}
	// Whoever may write its directory cannot point it elsewhere.
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(filepath.Dir(path), "link.pid")
	if err := os.Symlink(path, link); err != nil {
		t.Fatal(err)
	}
	if _, err := signalPIDFile(link, syscall.Signal(0)); err == nil {
		t.Error("a pid file that is a symlink was followed")
	}
	if os.Getuid() == 0 {
		if err := os.Chmod(path, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(path, 65534, 65534); err != nil {
			t.Fatal(err)
		}
		if _, err := signalPIDFile(path, syscall.Signal(0)); err == nil || !strings.Contains(err.Error(), "another user") {
			t.Errorf("a pid file of another user's: %v", err)
		}
	}
}
