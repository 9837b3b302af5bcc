package main

import (
	"strconv"
	"testing"

	"github.com/syvault/syvault/http/client"
	"github.com/syvault/syvault/internal/tcpproxy"
)

// proxy forwards a local port to a database so a test can take the database "down"
// (refuse and cut every connection) and bring it back on the same port, slow it, or
// freeze it.
type proxy struct {
	*tcpproxy.Proxy
	tb testing.TB
}

func mustProxy(tb testing.TB, target string) proxy {
	tb.Helper()
	p, err := tcpproxy.Start(target)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(p.Close)
	return proxy{p, tb}
}

// up listens again on the same port after Down.
func (p proxy) up() {
	p.tb.Helper()
	if err := p.Up(); err != nil {
		p.tb.Fatal(err)
	}
}

// proxiedTarget registers a target of eng that SyVault reaches through a proxy the test
// controls.
func proxiedTarget(t *testing.T, admin *client.Client, eng engine) (*client.Target, proxy) {
	t.Helper()
	tg := eng.target(t)
	px := mustProxy(t, "127.0.0.1:"+strconv.Itoa(tg.Port))
	tg.Port = px.Port()
	return mustRegister(t, admin, tg), px
}
