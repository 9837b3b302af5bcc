package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestRun(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/readyz":
			w.WriteHeader(http.StatusOK)
		default:
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	t.Cleanup(srv.Close)
	down := httptest.NewServer(http.NotFoundHandler())
	downURL := down.URL
	down.Close()

	tests := []struct {
		name string
		args []string
		want int
	}{
		{name: "ok", args: []string{srv.URL + "/readyz"}, want: 0},
		{name: "not ready", args: []string{srv.URL + "/other"}, want: 1},
		{name: "no server", args: []string{downURL + "/readyz"}, want: 1},
		{name: "bad url", args: []string{"://"}, want: 1},
		{name: "too many args", args: []string{"a", "b"}, want: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stderr strings.Builder
			if got := run(tt.args, &stderr); got != tt.want {
				t.Fatalf("run(%q) = %d, want %d (stderr %q)", tt.args, got, tt.want, stderr.String())
			}
			if tt.want != 0 && stderr.Len() == 0 {
				t.Error("a failure printed nothing on stderr")
			}
		})
	}
}
