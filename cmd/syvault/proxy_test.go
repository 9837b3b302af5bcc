package main

import (
	"io"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/syvault/syvault/http/client"
)

// proxy forwards a local port to a database so a test can take the database "down"
// (refuse and cut every connection) and bring it back on the same port.
type proxy struct {
	tb     testing.TB
	addr   string
	target string

	mu    sync.Mutex
	ln    net.Listener
	conns map[net.Conn]struct{}
	// delay, when set, holds each chunk from the client this long before forwarding it:
	// a slow network, so that work on the target is in flight long enough to observe.
	delay time.Duration
	// replyDelay does the same for each chunk from the database.
	replyDelay time.Duration
	// frozen, while open, makes the proxy a database that accepts connections and never
	// answers (a stopped process, a full disk, a partition dropping packets): nothing is
	// forwarded either way until thaw.
	frozen chan struct{}
}

func mustProxy(tb testing.TB, target string) *proxy {
	tb.Helper()
	p := &proxy{tb: tb, target: target, conns: map[net.Conn]struct{}{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	p.addr = ln.Addr().String()
	p.serve(ln)
	tb.Cleanup(p.down)
	return p
}

// proxiedTarget registers a target of eng that SyVault reaches through a proxy the test
// controls.
func proxiedTarget(t *testing.T, admin *client.Client, eng engine) (*client.Target, *proxy) {
	t.Helper()
	tg := eng.target(t)
	px := mustProxy(t, "127.0.0.1:"+strconv.Itoa(tg.Port))
	tg.Port = px.port()
	return mustRegister(t, admin, tg), px
}

func (p *proxy) port() int { return p.ln.Addr().(*net.TCPAddr).Port }

func (p *proxy) serve(ln net.Listener) {
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

func (p *proxy) pipe(c net.Conn) {
	p.waitThaw()
	up, err := net.Dial("tcp", p.target)
	if err != nil {
		c.Close()
		return
	}
	p.mu.Lock()
	p.conns[c], p.conns[up] = struct{}{}, struct{}{}
	p.mu.Unlock()
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(up, delayed{r: c, p: p}); done <- struct{}{} }()
	go func() { _, _ = io.Copy(c, delayed{r: up, p: p, reply: true}); done <- struct{}{} }()
	<-done
	c.Close()
	up.Close()
	p.mu.Lock()
	delete(p.conns, c)
	delete(p.conns, up)
	p.mu.Unlock()
}

// down refuses new connections and cuts the open ones.
func (p *proxy) down() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
	}
	for c := range p.conns {
		c.Close()
	}
}

// up listens again on the same port.
func (p *proxy) up() {
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		p.tb.Fatal(err)
	}
	p.serve(ln)
}

// delayed slows one direction of the proxy: requests, or replies when reply is set.
type delayed struct {
	r     io.Reader
	p     *proxy
	reply bool
}

func (d delayed) Read(b []byte) (int, error) {
	n, err := d.r.Read(b)
	d.p.waitThaw()
	d.p.mu.Lock()
	delay := d.p.delay
	if d.reply {
		delay = d.p.replyDelay
	}
	d.p.mu.Unlock()
	if n > 0 && delay > 0 {
		time.Sleep(delay) // simulated network latency, not synchronisation
	}
	return n, err
}

func (p *proxy) setDelay(d time.Duration) {
	p.mu.Lock()
	p.delay = d
	p.mu.Unlock()
}

// setReplyDelay holds each reply of the database for d: a statement has taken effect in
// the database well before its caller learns so.
func (p *proxy) setReplyDelay(d time.Duration) {
	p.mu.Lock()
	p.replyDelay = d
	p.mu.Unlock()
}

// freeze stops forwarding: connections are accepted, open ones stay open, and nothing
// gets through until thaw.
func (p *proxy) freeze() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.frozen == nil {
		p.frozen = make(chan struct{})
	}
}

// thaw forwards again what freeze held.
func (p *proxy) thaw() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.frozen != nil {
		close(p.frozen)
		p.frozen = nil
	}
}

func (p *proxy) waitThaw() {
	p.mu.Lock()
	f := p.frozen
	p.mu.Unlock()
	if f != nil {
		<-f
	}
}
