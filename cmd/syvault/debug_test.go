package main

import (
	"net/http"
	"strings"
	"testing"
)

// TestDebugListen: the profiler serves on a loopback address and refuses any other, so
// process memory is never one misconfigured flag away from the network.
func TestDebugListen(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", ":0", "192.0.2.1:6060", "example.com:6060"} {
		if _, err := serveDebug(addr); err == nil || !strings.Contains(err.Error(), "loopback") {
			t.Errorf("--debug-listen %s: err = %v, want a refusal naming loopback", addr, err)
		}
	}
	addr := freeAddr(t)
	stop, err := serveDebug(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	resp, err := http.Get("http://" + addr + "/debug/pprof/heap?debug=1")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("heap profile: %d", resp.StatusCode)
	}
}
