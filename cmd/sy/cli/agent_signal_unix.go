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
// could set it would have the agent signal any process of this user's (of anyone's,
// for an agent running as root). Group write is taken as the user's own where the
// group is the user's primary group, as a umask of 002 leaves it on systems that give
// each user a group of their own.
func pidFileTrusted(path string, fi os.FileInfo) error {
	st, ok := fi.Sys().(*syscall.Stat_t)
	perm := fi.Mode().Perm()
	switch {
	case perm&0o002 != 0:
		return fmt.Errorf("the pid file %s may be written by anyone (mode %v): make it writable by its owner only", path, perm)
	case ok && perm&0o020 != 0 && int(st.Gid) != os.Getgid():
		return fmt.Errorf("the pid file %s may be written by its group (mode %v, gid %d): make it writable by its owner only", path, perm, st.Gid)
	case ok && st.Uid != 0 && int(st.Uid) != os.Getuid():
		return fmt.Errorf("the pid file %s belongs to another user (uid %d)", path, st.Uid)
	}
	return nil
}

// openPIDFile opens a pid file, never through a symlink: whoever may write its
// directory could otherwise point it at a file of this user's holding another pid.
func openPIDFile(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
}
