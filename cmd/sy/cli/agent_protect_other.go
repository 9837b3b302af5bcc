//go:build !linux

package cli

// hideFromChildren does nothing where there is no /proc/<pid>/environ to read.
func hideFromChildren() error { return nil }
