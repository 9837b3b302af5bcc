// Package tcpproxy forwards a loopback port to a TCP address, with the network faults the
// tests and the chaos run put between SyVault and a database: the database down (new
// connections refused, open ones cut) and back on the same port, slow requests or replies,
// a freeze (connections accepted, nothing forwarded either way), and cuts of the open
// connections, all of them or those with a request in flight.
package tcpproxy

import (
	"context"
	"io"
	"net"
	"sync"
	"time"
)

// Proxy forwards one loopback port to its target. Safe for concurrent use.
type Proxy struct {
	target string
	addr   string
	port   int

	mu    sync.Mutex
	ln    net.Listener
	conns map[*pair]struct{}
	// delay holds each chunk from the client this long before forwarding it;
	// replyDelay each chunk from the target.
	delay, replyDelay time.Duration
	// frozen, while open, holds everything: see Freeze.
	frozen chan struct{}
}

// pair is one proxied connection. awaiting is set when the client sends and cleared when
// the target answers: set, a request is in flight.
type pair struct {
	client, server net.Conn
	mu             sync.Mutex
	awaiting       bool
}

func (pr *pair) setAwaiting(v bool) {
	pr.mu.Lock()
	pr.awaiting = v
	pr.mu.Unlock()
}

func (pr *pair) inFlight() bool {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	return pr.awaiting
}

func (pr *pair) close() {
	pr.client.Close()
	pr.server.Close()
}

// Start listens on a free loopback port and forwards what arrives to target.
func Start(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{target: target, addr: ln.Addr().String(), port: ln.Addr().(*net.TCPAddr).Port, conns: map[*pair]struct{}{}}
	p.serve(ln)
	return p, nil
}

// Port is the port the proxy listens on.
func (p *Proxy) Port() int { return p.port }

func (p *Proxy) serve(ln net.Listener) {
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.pipe(c)
		}
	}()
}

func (p *Proxy) pipe(c net.Conn) {
	p.waitThaw()
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
	go func() { _, _ = io.Copy(up, side{r: c, p: p, pr: pr}); done <- struct{}{} }()
	go func() { _, _ = io.Copy(c, side{r: up, p: p, pr: pr, reply: true}); done <- struct{}{} }()
	<-done
	pr.close()
	p.mu.Lock()
	delete(p.conns, pr)
	p.mu.Unlock()
}

// side is one direction of a connection: requests, or replies when reply is set. Each
// chunk read waits out a freeze and the direction's delay, and marks whether a request
// is in flight.
type side struct {
	r     io.Reader
	p     *Proxy
	pr    *pair
	reply bool
}

func (s side) Read(b []byte) (int, error) {
	n, err := s.r.Read(b)
	if n == 0 {
		return n, err
	}
	s.p.waitThaw()
	s.p.mu.Lock()
	delay := s.p.delay
	if s.reply {
		delay = s.p.replyDelay
	}
	s.p.mu.Unlock()
	if delay > 0 {
		time.Sleep(delay) // simulated network latency, not synchronisation
	}
	s.pr.setAwaiting(!s.reply)
	return n, err
}

// Down refuses new connections and cuts the open ones.
func (p *Proxy) Down() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
	}
	for pr := range p.conns {
		pr.close()
	}
}

// Up listens again on the same port after Down.
func (p *Proxy) Up() error {
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		return err
	}
	p.serve(ln)
	return nil
}

// Close stops the proxy: Down for good.
func (p *Proxy) Close() { p.Down() }

// Cut closes every open connection; new ones are accepted as before.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for pr := range p.conns {
		pr.close()
	}
}

// CutInFlight closes the connections with a request in flight (sent, not yet answered),
// waiting up to d for one to be; it returns how many it cut (0 when none was in flight in
// that time).
func (p *Proxy) CutInFlight(ctx context.Context, d time.Duration) int {
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

// SetDelay holds each chunk a client sends for d before forwarding it: a slow network,
// so that work on the target is in flight long enough to observe.
func (p *Proxy) SetDelay(d time.Duration) {
	p.mu.Lock()
	p.delay = d
	p.mu.Unlock()
}

// SetReplyDelay holds each reply of the target for d: a statement has taken effect well
// before its caller learns so.
func (p *Proxy) SetReplyDelay(d time.Duration) {
	p.mu.Lock()
	p.replyDelay = d
	p.mu.Unlock()
}

// Freeze stops forwarding: connections are accepted, open ones stay open, and nothing
// gets through until Thaw (a stopped process, a full disk, a partition dropping packets).
func (p *Proxy) Freeze() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.frozen == nil {
		p.frozen = make(chan struct{})
	}
}

// Thaw forwards again what Freeze held.
func (p *Proxy) Thaw() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.frozen != nil {
		close(p.frozen)
		p.frozen = nil
	}
}

func (p *Proxy) waitThaw() {
	p.mu.Lock()
	f := p.frozen
	p.mu.Unlock()
	if f != nil {
		<-f
	}
}
