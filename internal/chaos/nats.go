package chaos

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// natsNode is one nats-server process of the three-node cluster. Its store directory and
// ports stay the same across restarts: a node killed with -9 comes back with what it had
// on disk and catches up from its peers.
type natsNode struct {
	*proc
	url     string
	monitor string // host:port of its monitoring endpoint
}

// startNATS writes the three nodes' configurations and starts them.
func (h *Harness) startNATS(ctx context.Context, bin string) error {
	ports, err := freePorts(9)
	if err != nil {
		return err
	}
	var routes []string
	for i := range 3 {
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", ports[3+i]))
	}
	for i := range 3 {
		dir := filepath.Join(h.dir, fmt.Sprintf("nats-%d", i+1))
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
		conf := fmt.Sprintf(`server_name: n%d
listen: 127.0.0.1:%d
http: 127.0.0.1:%d
jetstream { store_dir: %q }
cluster {
  name: chaos
  listen: 127.0.0.1:%d
  routes: [%s]
}
`, i+1, ports[i], ports[6+i], filepath.Join(dir, "store"), ports[3+i], strings.Join(routes, ", "))
		confPath := filepath.Join(dir, "nats.conf")
		if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
			return err
		}
		n := &natsNode{
			proc:    &proc{name: fmt.Sprintf("nats-%d", i+1), argv: []string{bin, "-c", confPath}, logPath: filepath.Join(h.dir, fmt.Sprintf("nats-%d.log", i+1))},
			url:     fmt.Sprintf("nats://127.0.0.1:%d", ports[i]),
			monitor: fmt.Sprintf("127.0.0.1:%d", ports[6+i]),
		}
		h.nats = append(h.nats, n)
		h.track(n.proc)
		if err := n.start(); err != nil {
			return err
		}
	}
	urls := h.natsURLs()
	nc, err := nats.Connect(urls, nats.MaxReconnects(-1), nats.RetryOnFailedConnect(true), nats.Name("chaos"))
	if err != nil {
		return err
	}
	h.nc = nc
	if h.js, err = jetstream.New(nc); err != nil {
		return err
	}
	// JetStream is usable once the cluster has elected a meta leader and places R3
	// assets: a throwaway R3 stream is created (and deleted) first, so that `syvault
	// init` does not meet a cluster still forming (on a loaded machine it then timed out
	// waiting for its own read side, with the admin client recorded and its key lost).
	return poll(ctx, 2*time.Minute, "the NATS cluster to place an R3 stream", func() error {
		if _, err := h.js.AccountInfo(ctx); err != nil {
			return err
		}
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		st, err := h.js.CreateOrUpdateStream(cctx, jetstream.StreamConfig{Name: "CHAOS_WARMUP", Subjects: []string{"chaos.warmup"}, Replicas: 3})
		if err != nil {
			return err
		}
		if _, err := h.js.Publish(cctx, "chaos.warmup", nil); err != nil {
			return err
		}
		return h.js.DeleteStream(cctx, st.CachedInfo().Config.Name)
	})
}

// natsURLs is the comma list of the three nodes' client URLs.
func (h *Harness) natsURLs() string {
	var urls []string
	for _, n := range h.nats {
		urls = append(urls, n.url)
	}
	return strings.Join(urls, ",")
}

// waitNode waits for a restarted node to be healthy: its JetStream streams and consumers
// current with their peers (the monitoring endpoint's /healthz). Only then may another
// node be killed: two nodes behind at once is a lost quorum, not a node failure.
func waitNode(ctx context.Context, n *natsNode) error {
	return poll(ctx, 2*time.Minute, n.name+" to be current (/healthz)", func() error { return probe(ctx, n.monitor, "/healthz") })
}

// freePorts returns n distinct free loopback ports.
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// poll calls f until it returns nil, ctx ends or d passes; the error names what it
// waited for and f's last error.
func poll(ctx context.Context, d time.Duration, what string, f func() error) error {
	deadline := time.Now().Add(d)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		err := f()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("waited %s for %s: %w", d, what, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", what, ctx.Err())
		case <-tick.C:
		}
	}
}
