//go:build unix

package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// lockDataDir takes DIR/syvault.lock, which one process at a time may hold: two embedded
// NATS servers on one store directory would each write its files as if they were alone.
// The lock goes with the process (or with the returned file's Close); a lock file a
// crashed process left behind holds no lock. When another process holds it, the error
// names that process and says what to do instead.
func lockDataDir(dir string) (*os.File, error) {
	path := filepath.Join(dir, "syvault.lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, dataDirError(dir, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		holder := ""
		if data, rerr := os.ReadFile(path); rerr == nil && strings.TrimSpace(string(data)) != "" {
			holder = " (pid " + strings.TrimSpace(string(data)) + ")"
		}
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("--data-dir %s is in use by another syvault process%s, a server or a command on its embedded NATS: "+
				"stop it first, or pass another --data-dir (to run more processes on one store, start the first with --nats-listen "+
				"and join it with --nats-url and --nats-creds)", dir, holder)
		}
		return nil, dataDirError(dir, err)
	}
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return f, nil
}
