//go:build !unix

package cli

import "os"

// signalsByName is empty: only Unix systems deliver signals a process can handle.
var signalsByName = map[string]os.Signal{}

// stopSignal ends a process; without Unix signals there is no gentler way.
var stopSignal os.Signal = os.Kill

// pidFileTrusted has nothing to check where file modes do not say who may write.
func pidFileTrusted(string, os.FileInfo) error { return nil }

// openPIDFile opens a pid file.
func openPIDFile(path string) (*os.File, error) { return os.Open(path) }
