package cli

import "syscall"

// hideFromChildren makes this process undumpable, which makes its /proc/<pid> files
// (environ, mem) its owner's no longer but root's: an application of the same user (an
// --exec child, or one beside the agent) could otherwise read the agent's private key
// from /proc/<agent>/environ, however carefully its own environment leaves the key out.
// It also refuses that user's ptrace of the agent.
func hideFromChildren() error {
	if _, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, syscall.PR_SET_DUMPABLE, 0, 0); errno != 0 {
		return errno
	}
	return nil
}
