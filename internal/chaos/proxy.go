package chaos

import (
	"context"
	"io"
	"net"
	"sync"
	"time"
)

// proxy forwards a loopback port to a database. SyVault reaches each target through one,
// so the run can cut a connection while a statement is in flight: the client has sent
// something the server has not answered yet.
type proxy struct {
	target string
	ln     net.Listener

	mu    sync.Mutex
	conns map[*pair]struct{}
}

// pair is one proxied connection. awaiting is set when the client sends and cleared when
// the server answers: set, a statement is in flight.
type pair struct {
	client, server net.Conn
	mu             sync.Mutex
	awaiting       bool
}

func (p *pair) setAwaiting(v bool) {
	p.mu.Lock()
	p.awaiting = v
	p.mu.Unlock()
}

func (p *pair) inFlight() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.awaiting
}

func (p *pair) close() {
	p.client.Close()
	p.server.Close()
}

func startProxy(target string) (*proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &proxy{target: target, ln: ln, conns: map[*pair]struct{}{}}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.pipe(c)
		}
	}()
	return p, nil
}

func (p *proxy) port() int { return p.ln.Addr().(*net.TCPAddr).Port }

func (p *proxy) pipe(c net.Conn) {
	up, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil {
		c.Close()
		return
	}
	pr := &pair{client: c, server: up}
	p.mu.Lock()
	p.conns[pr] = struct{}{}
	p.mu.Unlock()
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(up, marking{r: c, mark: func() { pr.setAwaiting(true) }}); done <- struct{}{} }()
	go func() { _, _ = io.Copy(c, marking{r: up, mark: func() { pr.setAwaiting(false) }}); done <- struct{}{} }()
	<-done
	pr.close()
	p.mu.Lock()
	delete(p.conns, pr)
	p.mu.Unlock()
}

// marking calls mark after each read that returned data.
type marking struct {
	r    io.Reader
	mark func()
}

func (m marking) Read(b []byte) (int, error) {
	n, err := m.r.Read(b)
	if n > 0 {
		m.mark()
	}
	return n, err
}

// cutInFlight closes the connections with a statement in flight, waiting up to d for
// one to be; it returns how many it cut (0 when none was in flight in that time).
func (p *proxy) cutInFlight(ctx context.Context, d time.Duration) int {
	deadline := time.Now().Add(d)
	for {
		p.mu.Lock()
		var cut []*pair
		for pr := range p.conns {
			if pr.inFlight() {
				cut = append(cut, pr)
			}
		}
		p.mu.Unlock()
		for _, pr := range cut {
			pr.close()
		}
		if len(cut) > 0 || time.Now().After(deadline) || ctx.Err() != nil {
			return len(cut)
		}
		// Statements take a few milliseconds: look again soon.
		select {
		case <-ctx.Done():
		case <-time.After(2 * time.Millisecond):
		}
	}
}

func (p *proxy) close() {
	p.ln.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	for pr := range p.conns {
		pr.close()
	}
}
