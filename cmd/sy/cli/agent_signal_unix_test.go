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
	if err := os.Chmod(path, 0o666); err != nil {
		t.Fatal(err)
	}
	if _, err := signalPIDFile(path, syscall.Signal(0)); err == nil || !strings.Contains(err.Error(), "written by others") {
		t.Errorf("a pid file anyone may write: %v", err)
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
