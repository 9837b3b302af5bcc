// Package jstest gives tests a real JetStream: an embedded nats-server with file storage
// in a temporary directory, stopped when the test ends.
package jstest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/syvault/syvault/events/jsstore"
)

// Server is an embedded NATS server that can be restarted on the same storage.
type Server struct {
	Dir string
	NS  *server.Server
}

// MustServer starts an embedded JetStream server in dir (a fresh temp dir when empty).
func MustServer(tb testing.TB, dir string) *Server {
	tb.Helper()
	if dir == "" {
		dir = tb.TempDir()
	}
	ns := Start(tb, &server.Options{JetStream: true, StoreDir: dir, DontListen: true, NoSigs: true, NoLog: true})
	return &Server{Dir: dir, NS: ns}
}

// Start starts an embedded NATS server with opts, stopped when the test ends, and returns
// it once it accepts connections.
func Start(tb testing.TB, opts *server.Options) *server.Server {
	tb.Helper()
	ns, err := start(tb, opts)
	if err != nil {
		tb.Fatal(err)
	}
	return ns
}

func start(tb testing.TB, opts *server.Options) (*server.Server, error) {
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, err
	}
	tb.Cleanup(func() {
		ns.Shutdown()
		ns.WaitForShutdown()
	})
	ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		return nil, errors.New("embedded nats did not start")
	}
	return ns, nil
}

// MustCluster starts three clustered JetStream servers on loopback, and returns them
// with their client URLs (comma-separated) once JetStream answers. The first server is
// the seed the other two route to (they learn of each other from it); a JetStream
// cluster wants routes configured on every server, so the seed's route is to itself, on
// a port picked beforehand. Any connection of the tests running alongside can take such a
// port before the seed listens on it, and the seed then never becomes ready: it is
// started again on another port. The other listeners take ports of the kernel's
// choosing.
func MustCluster(tb testing.TB) ([]*server.Server, string) {
	tb.Helper()
	servers, _ := MustClusterOpts(tb)
	urls := make([]string, len(servers))
	for i, ns := range servers {
		urls[i] = ns.ClientURL()
	}
	return servers, strings.Join(urls, ",")
}

// MustClusterOpts is MustCluster, returning each server's options too, for a test that
// stops servers and starts them again: Restart with the same options brings a server
// back with its name and its store. Restart the second and third (the first is the seed
// the others find each other through).
func MustClusterOpts(tb testing.TB) ([]*server.Server, []*server.Options) {
	tb.Helper()
	var seed *server.Server
	var routes []*url.URL
	var opts []*server.Options
	for attempt := 1; seed == nil; attempt++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		_ = l.Close()
		routes = []*url.URL{{Scheme: "nats", Host: fmt.Sprintf("127.0.0.1:%d", port)}}
		opts = []*server.Options{clusterNode(tb, 0, port, routes)}
		seed, err = start(tb, opts[0])
		if err != nil && attempt == 3 {
			tb.Fatalf("seed of the cluster: %v", err)
		}
	}
	servers := []*server.Server{seed}
	for i := 1; i < 3; i++ {
		opts = append(opts, clusterNode(tb, i, -1, routes))
		servers = append(servers, Start(tb, opts[i]))
	}
	// JetStream is usable once a meta leader is elected and has the two other servers as
	// current peers: until then an R3 stream is refused ("no suitable peers for
	// placement"), which a loaded machine showed in a test's first bucket.
	for deadline := time.Now().Add(30 * time.Second); ; {
		if metaReady(servers) {
			return servers, opts
		}
		if time.Now().After(deadline) {
			tb.Fatal("JetStream cluster not ready: no meta leader with two current peers in 30 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// clusterNode is the options of node i of the cluster whose seed routes are routes. The
// cluster's name is its own (from the seed's route), so that a node of one test's
// cluster never joins another's that took a port it had.
func clusterNode(tb testing.TB, i, clusterPort int, routes []*url.URL) *server.Options {
	name := "syvault-" + routes[0].Port()
	return &server.Options{
		ServerName: fmt.Sprintf("n%d", i), Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: tb.TempDir(),
		Cluster: server.ClusterOpts{Name: name, Host: "127.0.0.1", Port: clusterPort},
		Routes:  routes, NoLog: true, NoSigs: true,
	}
}

// Restart starts a stopped cluster node (the second or third of MustClusterOpts) again
// with its name and its store, on ports of the kernel's choosing: the first start wrote
// the ports it was given into opts, and while the node was down any connection of the
// tests running alongside may have taken one of them as its own (a loaded CI run saw a
// node that never came back so).
func Restart(tb testing.TB, opts *server.Options) *server.Server {
	tb.Helper()
	opts.Port, opts.Cluster.Port = -1, -1
	return Start(tb, opts)
}

// Shutdown stops the server; safe to call twice.
func (s *Server) Shutdown() {
	s.NS.Shutdown()
	s.NS.WaitForShutdown()
}

// MustConnect returns a connection to s, closed when the test ends.
func (s *Server) MustConnect(tb testing.TB) *nats.Conn {
	tb.Helper()
	nc, err := nats.Connect("", nats.InProcessServer(s.NS))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(nc.Close)
	return nc
}

// MustStore opens a store on s through a new connection.
func (s *Server) MustStore(tb testing.TB) *jsstore.Store {
	tb.Helper()
	st, _ := s.MustStoreConn(tb)
	return st
}

// MustStoreConn is MustStore, also returning the store's connection, whose statistics
// count what the store asks of NATS.
func (s *Server) MustStoreConn(tb testing.TB) (*jsstore.Store, *nats.Conn) {
	tb.Helper()
	nc := s.MustConnect(tb)
	st, err := jsstore.Open(context.Background(), nc, jsstore.Config{})
	if err != nil {
		tb.Fatal(err)
	}
	return st, nc
}

// MustStore starts a fresh server and opens a store on it.
func MustStore(tb testing.TB) *jsstore.Store {
	tb.Helper()
	return MustServer(tb, "").MustStore(tb)
}

// MustStream returns the named stream of s through a connection of the test's own, for
// tests that look behind the store's verbs.
func (s *Server) MustStream(tb testing.TB, name string) jetstream.Stream {
	tb.Helper()
	js, err := jetstream.New(s.MustConnect(tb))
	if err != nil {
		tb.Fatal(err)
	}
	st, err := js.Stream(context.Background(), name)
	if err != nil {
		tb.Fatal(err)
	}
	return st
}

// metaReady reports whether one of servers leads the JetStream meta group with every
// other one a current peer.
func metaReady(servers []*server.Server) bool {
	for _, ns := range servers {
		info, err := ns.Jsz(nil)
		if err != nil || info.Meta == nil || info.Meta.Leader != ns.Name() || len(info.Meta.Replicas) != len(servers)-1 {
			continue
		}
		for _, p := range info.Meta.Replicas {
			if !p.Current || p.Offline {
				return false
			}
		}
		return true
	}
	return false
}
