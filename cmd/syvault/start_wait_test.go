package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/syvault/syvault/events"
	"github.com/syvault/syvault/events/jsstore/jstest"
	"github.com/syvault/syvault/internal/logbuf"
	"github.com/syvault/syvault/internal/tcpproxy"
)

// A server whose NATS was reached but whose JetStream did not answer in time at its start
// (a cluster electing its leaders; seen in the chaos run while NATS was faulted) exited,
// and a supervisor's back-off could stretch a short election into minutes down. It now
// waits and opens again, and serves once JetStream answers.
func TestServe_WaitsForJetStreamAtStart(t *testing.T) {
	ns := jstest.Start(t, &server.Options{JetStream: true, StoreDir: t.TempDir(), Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true})
	proxy, err := tcpproxy.Start(ns.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(proxy.Close)
	proxy.SetDelay(50 * time.Millisecond) // a slow start, to be frozen midway
	direct, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(direct.Close)
	js, err := jetstream.New(direct)
	if err != nil {
		t.Fatal(err)
	}

	addr, dir := freeAddr(t), t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	var stderr logbuf.Buffer
	var exitErr error // set before exited closes
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		exitErr = run(ctx, []string{"serve", "--dev", "--data-dir", dir, "--listen", addr,
			"--nats-url", fmt.Sprintf("nats://127.0.0.1:%d", proxy.Port())}, io.Discard, &stderr)
	}()
	t.Cleanup(func() { // a failed test's server stops too, before its directory goes
		proxy.Thaw()
		cancel()
		<-exited
	})
	// Connected, its stream made: JetStream's answers stop, as while a cluster elects.
	within := func(what string, d time.Duration, cond func() bool) {
		t.Helper()
		eventually(t, d, what, func() (bool, error) {
			select {
			case <-exited:
				t.Fatalf("%s: the server exited: %v\n%s", what, exitErr, stderr.String())
			default:
			}
			return cond(), fmt.Errorf("the server's log:\n%s", stderr.String())
		})
	}
	within("the events stream made", 30*time.Second, func() bool {
		_, err := js.Stream(ctx, events.EventsStream)
		return err == nil
	})
	proxy.Freeze()
	within("the start tried again", 60*time.Second, func() bool {
		return strings.Contains(stderr.String(), "did not answer at start; trying again")
	})
	proxy.SetDelay(0)
	proxy.Thaw()
	within("the server ready", 60*time.Second, func() bool {
		resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + addr + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	cancel()
	<-exited
	if exitErr != nil {
		t.Fatalf("the server's stop: %v", exitErr)
	}
}

// A NATS user without permission on JetStream's API sees its requests time out (NATS
// answers a denied publish only with an asynchronous error), and the start waited for it
// for good, each attempt logged as JetStream not answering. The start now ends, saying
// what NATS refused.
func TestServe_EndsWhenNATSDeniesJetStream(t *testing.T) {
	const password = "nats-user-secret-0f3a"
	ns := jstest.Start(t, &server.Options{JetStream: true, StoreDir: t.TempDir(), Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true,
		Users: []*server.User{{Username: "syvault", Password: password, Permissions: &server.Permissions{
			Publish: &server.SubjectPermission{Deny: []string{"$JS.API.>"}}}}}})
	p := serveWith(t, ns, password)
	exitErr := p.exit(t, "the start ended")
	if exitErr == nil || !strings.Contains(exitErr.Error(), "permissions violation") || !strings.Contains(exitErr.Error(), "$JS.API") {
		t.Fatalf("the start ended with %v; want it to name the permission NATS denied\n%s", exitErr, p.log.String())
	}
	if !strings.Contains(p.log.String(), `msg="NATS reported an error"`) {
		t.Errorf("the log does not show what NATS reported:\n%s", p.log.String())
	}
}

// A connection to NATS that closed for good (here NATS refusing the process's
// credential twice on reconnecting, after an operator removed its user; or NATS closing
// it for a protocol line it would not take) left the process up, answering 503 to every
// request and alive to a liveness probe, for good. It now stops, saying why, so that a
// supervisor starts it again.
func TestServe_StopsWhenItsNATSConnectionClosesForGood(t *testing.T) {
	const password = "nats-user-secret-7c1d"
	opts := &server.Options{JetStream: true, StoreDir: t.TempDir(), Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true,
		Users: []*server.User{{Username: "syvault", Password: password}}}
	ns := jstest.Start(t, opts)
	p := serveWith(t, ns, password)
	eventually(t, time.Minute, "the server ready", func() (bool, error) {
		resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + p.addr + "/readyz")
		if err != nil {
			return false, err
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, fmt.Errorf("the server's log:\n%s", p.log.String())
	})
	reloaded := opts.Clone()
	reloaded.Users = []*server.User{{Username: "someone-else", Password: "another-password"}}
	if err := ns.ReloadOptions(reloaded); err != nil {
		t.Fatal(err)
	}
	if err := p.exit(t, "the server stopped"); err == nil || !strings.Contains(err.Error(), "closed for good") {
		t.Fatalf("the server stopped with %v; want it to say its connection to NATS closed for good\n%s", err, p.log.String())
	}
}

// served is a serve process run by a test: exited closes when it returns, err then
// holding what it returned.
type served struct {
	addr   string
	log    logbuf.Buffer
	exited chan struct{}
	err    error
}

// serveWith runs serve --dev on ns as its user syvault with password, stopped (and
// waited for) at the test's end, where its error and log must not hold the password.
func serveWith(t *testing.T, ns *server.Server, password string) *served {
	t.Helper()
	p := &served{addr: freeAddr(t), exited: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	dir := t.TempDir()
	go func() {
		defer close(p.exited)
		p.err = run(ctx, []string{"serve", "--dev", "--data-dir", dir, "--listen", p.addr,
			"--nats-url", fmt.Sprintf("nats://syvault:%s@127.0.0.1:%d", password, ns.Addr().(*net.TCPAddr).Port)}, io.Discard, &p.log)
	}()
	t.Cleanup(func() {
		cancel()
		<-p.exited
		if p.err != nil && strings.Contains(p.err.Error(), password) || strings.Contains(p.log.String(), password) {
			t.Error("the NATS user's password is in the server's error or log")
		}
	})
	return p
}

// exit waits for p to return (what: what that means) and returns its error.
func (p *served) exit(t *testing.T, what string) error {
	t.Helper()
	eventually(t, 2*time.Minute, what, func() (bool, error) {
		select {
		case <-p.exited:
			return true, nil
		default:
			return false, fmt.Errorf("the server's log:\n%s", p.log.String())
		}
	})
	return p.err
}

// What a start may wait out, and what it may not.
func TestStartMayPass(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"the store's timeout", events.StoreUnavailable(fmt.Errorf("jsstore.Open: %w", context.DeadlineExceeded)), true},
		{"a token key's read timing out", fmt.Errorf("tokenkey: load: %w", nats.ErrTimeout), true},
		{"no leader, no quorum", fmt.Errorf("jsstore.Open: %w", &jetstream.APIError{ErrorCode: 10008, Code: 503}), true},
		{"a permission NATS denied, timing out", fmt.Errorf("NATS denied: %w (%w)", nats.ErrPermissionViolation,
			events.StoreUnavailable(fmt.Errorf("jsstore.Open: %w", context.DeadlineExceeded))), false},
		{"JetStream off", events.StoreUnavailable(fmt.Errorf("jsstore.Open: %w", nats.ErrNoResponders)), false},
		{"NATS refusing the connection", fmt.Errorf("cannot connect to NATS: %w", nats.ErrNoServers), false},
		{"a refused credential", fmt.Errorf("cannot connect to NATS: %w", nats.ErrAuthorization), false},
	} {
		if got := startMayPass(tc.err); got != tc.want {
			t.Errorf("%s: %v; want %v", tc.name, got, tc.want)
		}
	}
}
