package cli

import (
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestHideFromChildren: an --exec application runs as the agent's user, and read the
// agent's private key from /proc/$PPID/environ although its own environment left the key
// out. The test runs a copy of itself (as nobody when run as root, whom no file mode
// stops) that hides itself, then asks a child of its own to read its environment.
func TestHideFromChildren(t *testing.T) {
	if os.Getenv("SY_TEST_HIDE_HELPER") != "" {
		if err := hideFromChildren(); err != nil {
			t.Fatal(err)
		}
		out, _ := exec.Command("sh", "-c", `tr '\0' '\n' < /proc/$PPID/environ | grep -c '^SY_PRIVATE_KEY=' || true`).Output()
		if strings.TrimSpace(string(out)) != "0" {
			t.Fatalf("the child read its parent's environment: %q", out)
		}
		return
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} { // nobody must reach the copy
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(dir, "cli.test")
	src, err := os.Open(self)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(bin, os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	dst.Close()
	cmd := exec.Command(bin, "-test.run=^TestHideFromChildren$", "-test.count=1")
	cmd.Dir = dir
	cmd.Env = []string{"PATH=/usr/bin:/bin", "SY_TEST_HIDE_HELPER=1", "SY_PRIVATE_KEY=-----BEGIN PRIVATE KEY-----"}
	if os.Getuid() == 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
}
