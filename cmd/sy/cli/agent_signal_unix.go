//go:build unix

package cli

import (
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
