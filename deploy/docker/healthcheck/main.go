// Command healthcheck asks a URL over HTTP and exits 0 when the answer is 2xx, 1 otherwise.
// It is copied into the server image so that a container engine's health check (the
// compose file's) works on a distroless image that has no shell, curl or wget. Kubernetes
// does not need it: its probes ask /healthz and /readyz themselves.
//
// Usage: healthcheck [URL]   (default http://127.0.0.1:8200/readyz)
package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

// DefaultURL is what a server started with --listen 0.0.0.0:8200 answers readiness on.
const DefaultURL = "http://127.0.0.1:8200/readyz"

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

// run returns the exit status: 0 on a 2xx answer within five seconds, 1 on anything else
// (another status, no answer, a bad URL), 2 on bad usage. A failure is one line on stderr.
func run(args []string, stderr io.Writer) int {
	url := DefaultURL
	switch len(args) {
	case 0:
	case 1:
		url = args[0]
	default:
		fmt.Fprintln(stderr, "usage: healthcheck [URL]")
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		fmt.Fprintln(stderr, "healthcheck:", err)
		return 1
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		fmt.Fprintln(stderr, "healthcheck:", err)
		return 1
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		fmt.Fprintf(stderr, "healthcheck: %s answered %s\n", url, resp.Status)
		return 1
	}
	return 0
}
