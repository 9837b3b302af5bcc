// Package nettest gives tests a TCP server on a free loopback port that hands each
// connection to a function, closed when the test ends.
package nettest

import (
	"net"
	"testing"
)

// Serve listens on 127.0.0.1 and calls handle with each connection accepted, until the
// test ends. handle runs in the accepting goroutine, so connections are handled in the
// order they were accepted; one that serves a connection for long starts a goroutine.
func Serve(tb testing.TB, handle func(net.Conn)) net.Listener {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			handle(c)
		}
	}()
	return ln
}
