package main

import (
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/syvault/syvault/internal/logbuf"
)

// TestTaskRun_Stops: `go tool task run`, the README's way to start a development
// server, ends on a SIGTERM to it and on a terminal's Ctrl-C (a SIGINT to its whole
// process group), with status 0, no "Failed" line, and no server left behind.
func TestTaskRun_Stops(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go command on PATH")
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		group bool // a Ctrl-C signals the terminal's foreground process group
		sig   syscall.Signal
	}{
		{"SIGTERM", false, syscall.SIGTERM},
		{"Ctrl-C", true, syscall.SIGINT},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr, logs := freeAddr(t), &logbuf.Buffer{}
			cmd := exec.Command("go", "tool", "task", "run", "DATA_DIR="+t.TempDir(), "LISTEN="+addr)
			cmd.Dir, cmd.Stdout, cmd.Stderr = root, logs, logs
			cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			t.Cleanup(func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) })
			eventually(t, 120*time.Second, "server ready", func() (bool, error) {
				resp, err := http.Get("http://" + addr + "/readyz")
				if err != nil {
					return false, err
				}
				resp.Body.Close()
				return resp.StatusCode == 200, nil
			})
			server := serverPID(t, addr)
			start := time.Now()
			target := cmd.Process.Pid
			if tc.group {
				target = -target
			}
			if err := syscall.Kill(target, tc.sig); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("go tool task run after %s: %v\n%s", tc.name, err, logs.String())
				}
			case <-time.After(30 * time.Second):
				t.Fatalf("go tool task run still running 30 s after %s\n%s", tc.name, logs.String())
			}
			eventually(t, 30*time.Second, "the server gone", func() (bool, error) { return !running(server), nil })
			t.Logf("%s: server gone %v after the signal", tc.name, time.Since(start).Round(time.Millisecond))
			if strings.Contains(logs.String(), "Failed") {
				t.Errorf("a Failed line after %s:\n%s", tc.name, logs.String())
			}
		})
	}
}

// serverPID finds the process listening on addr among this user's syvault processes.
func serverPID(t *testing.T, addr string) int {
	t.Helper()
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		data, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		args := strings.Split(string(data), "\x00")
		if len(args) > 1 && strings.HasSuffix(args[0], "syvault") && strings.Contains(string(data), addr) {
			if pid, err := strconv.Atoi(filepath.Base(filepath.Dir(p))); err == nil {
				return pid
			}
		}
	}
	t.Fatalf("no syvault process serving %s", addr)
	return 0
}

// running tells whether pid is a live process (an exited one waiting to be reaped is not).
func running(pid int) bool {
	st, ok := stat(pid)
	return ok && st.state != "Z"
}
