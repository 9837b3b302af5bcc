//go:build unix

package cli

import (
	"fmt"
	"os"
	"syscall"
)

// signalsByName are the signals --signal accepts, by name without the SIG prefix.
var signalsByName = map[string]os.Signal{
	"HUP": syscall.SIGHUP, "INT": syscall.SIGINT, "QUIT": syscall.SIGQUIT, "TERM": syscall.SIGTERM,
	"USR1": syscall.SIGUSR1, "USR2": syscall.SIGUSR2,
}

// stopSignal asks a process to exit; sy agent sends it to an --exec child it restarts.
var stopSignal os.Signal = syscall.SIGTERM

// pidFileTrusted refuses a pid file that someone other than this user (or root) owns
// or may write: its content names the process the agent signals, and another user who
// could set it would have the agent signal any process of this user's.
func pidFileTrusted(path string, fi os.FileInfo) error {
	st, ok := fi.Sys().(*syscall.Stat_t)
	switch {
	case fi.Mode().Perm()&0o022 != 0:
		return fmt.Errorf("the pid file %s may be written by others (mode %v): make it writable by its owner only", path, fi.Mode().Perm())
	case ok && st.Uid != 0 && int(st.Uid) != os.Getuid():
		return fmt.Errorf("the pid file %s belongs to another user (uid %d)", path, st.Uid)
	}
	return nil
}
