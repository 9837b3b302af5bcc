package tcpproxy_test

import (
	"bufio"
	"context"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/syvault/syvault/internal/nettest"
	"github.com/syvault/syvault/internal/tcpproxy"
)

// echoServer answers each line it reads with the same line, except "hold", which it
// never answers: a request left in flight.
func echoServer(t *testing.T) string {
	t.Helper()
	return nettest.Serve(t, func(c net.Conn) {
		go func() {
			defer c.Close()
			r := bufio.NewReader(c)
			for {
				line, err := r.ReadString('\n')
				if err != nil {
					return
				}
				if line != "hold\n" {
					_, _ = c.Write([]byte(line))
				}
			}
		}()
	}).Addr().String()
}

type conn struct {
	net.Conn
	r *bufio.Reader
}

func dial(t *testing.T, p *tcpproxy.Proxy) (*conn, error) {
	t.Helper()
	c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(p.Port()))
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Close() })
	return &conn{c, bufio.NewReader(c)}, nil
}

func mustDial(t *testing.T, p *tcpproxy.Proxy) *conn {
	t.Helper()
	c, err := dial(t, p)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// ask sends line and returns the answer, or the error that came instead within d.
func (c *conn) ask(line string, d time.Duration) (string, error) {
	_ = c.SetDeadline(time.Now().Add(d))
	if _, err := c.Write([]byte(line + "\n")); err != nil {
		return "", err
	}
	got, err := c.r.ReadString('\n')
	if err != nil {
		return "", err
	}
	return got[:len(got)-1], nil
}

func mustAnswer(t *testing.T, c *conn, line string) {
	t.Helper()
	got, err := c.ask(line, 5*time.Second)
	if err != nil || got != line {
		t.Fatalf("asked %q, got %q, %v", line, got, err)
	}
}

func TestProxy(t *testing.T) {
	p, err := tcpproxy.Start(echoServer(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	top := t // connections outlive the subtest that opens them
	c := mustDial(top, p)
	mustAnswer(t, c, "one")

	t.Run("down cuts and refuses; up serves again on the same port", func(t *testing.T) {
		p.Down()
		if _, err := c.ask("two", 5*time.Second); err == nil {
			t.Fatal("an open connection survived Down")
		}
		if _, err := dial(top, p); err == nil {
			t.Fatal("a new connection was accepted while down")
		}
		if err := p.Up(); err != nil {
			t.Fatal(err)
		}
		c = mustDial(top, p)
		mustAnswer(t, c, "three")
	})
	t.Run("frozen, nothing gets through until thawed", func(t *testing.T) {
		p.Freeze()
		if _, err := c.ask("four", 300*time.Millisecond); err == nil {
			t.Fatal("an answer got through a freeze")
		}
		p.Thaw()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if got, err := c.r.ReadString('\n'); err != nil || got != "four\n" {
			t.Fatalf("after the thaw: %q, %v", got, err)
		}
	})
	t.Run("a request in flight is cut, an idle connection is not", func(t *testing.T) {
		idle := mustDial(top, p)
		mustAnswer(t, idle, "idle")
		if _, err := c.Write([]byte("hold\n")); err != nil {
			t.Fatal(err)
		}
		if n := p.CutInFlight(context.Background(), 5*time.Second); n != 1 {
			t.Fatalf("cut %d connections, want 1", n)
		}
		if _, err := c.ask("five", 5*time.Second); err == nil {
			t.Fatal("the connection in flight survived the cut")
		}
		mustAnswer(t, idle, "still")
		p.Cut()
		if _, err := idle.ask("six", 5*time.Second); err == nil {
			t.Fatal("a connection survived Cut")
		}
		c = mustDial(top, p) // Cut left the listener open
		mustAnswer(t, c, "seven")
	})
	t.Run("delays hold requests and replies", func(t *testing.T) {
		p.SetDelay(100 * time.Millisecond)
		p.SetReplyDelay(100 * time.Millisecond)
		start := time.Now()
		mustAnswer(t, c, "slow")
		if took := time.Since(start); took < 200*time.Millisecond {
			t.Fatalf("a round trip took %v through 2 × 100 ms of delay", took)
		}
		p.SetDelay(0)
		p.SetReplyDelay(0)
	})
}
