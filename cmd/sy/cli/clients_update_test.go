package cli

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/syvault/syvault/http/client"
)

// TestClientUpdate_AnotherAdminsChangeKept: `sy client update` sends its update on the
// version it read (If-Match). When another admin changed the client in between (the
// server answers 412), it reads the client again and applies its flags to what the
// client then holds: the other admin's change (here the name) is kept, not undone by the
// first read's copy of it.
func TestClientUpdate_AnotherAdminsChangeKept(t *testing.T) {
	f := MustFakeServer(t)
	var (
		mu      sync.Mutex
		cur     = fakeClients[1]
		version = 7
		puts    []string // the If-Match of each PUT
		stored  client.AppClient
	)
	etag := func() string { return `"` + strconv.Itoa(version) + `"` }
	reply := func(w http.ResponseWriter, status int, v any) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("ETag", etag())
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(v)
	}
	f.mux.HandleFunc("GET /api/sm/v1/clients/{id}", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		got := cur
		got.ClientID = r.PathValue("id") // the client asked for, as a server answers
		reply(w, http.StatusOK, got)
	})
	f.mux.HandleFunc("PUT /api/sm/v1/clients/{id}", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		puts = append(puts, r.Header.Get("If-Match"))
		if len(puts) == 1 { // another admin renamed the client after this one's read
			cur.Name, version = "billing-renamed", version+1
		}
		if r.Header.Get("If-Match") != etag() {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusPreconditionFailed)
			json.NewEncoder(w).Encode(map[string]string{"error": "precondition_failed", "message": "The client changed; read it again."})
			return
		}
		json.NewDecoder(r.Body).Decode(&stored)
		stored.ClientID, stored.CreatedAt = cur.ClientID, cur.CreatedAt
		cur, version = stored, version+1
		reply(w, http.StatusOK, cur)
	})

	res := run(t, f.env(t), "", "client", "update", appID, "--max-leases", "9", "--format", "json")
	if res.code != 0 {
		t.Fatalf("exit %d: %s", res.code, res.stderr)
	}
	mu.Lock()
	sent, got := puts, stored
	puts = nil
	mu.Unlock()
	if len(sent) != 2 || sent[0] != `"7"` || sent[1] != `"8"` {
		t.Fatalf("PUTs sent with If-Match %q, want the version read each time (\"7\", then \"8\")", sent)
	}
	if got.Name != "billing-renamed" || got.MaxLeases != 9 || len(got.AllowedRecords) != 2 {
		t.Fatalf("stored %+v, want the other admin's name kept and max_leases 9", got)
	}

	// Should the client keep changing under it, the command gives up and says so.
	f.mux.HandleFunc("PUT /api/sm/v1/clients/other", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		puts = append(puts, r.Header.Get("If-Match"))
		version++
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusPreconditionFailed)
		json.NewEncoder(w).Encode(map[string]string{"error": "precondition_failed", "message": "The client changed; read it again."})
	})
	res = run(t, f.env(t), "", "client", "update", "other", "--max-leases", "9")
	mu.Lock()
	sent = puts
	mu.Unlock()
	if res.code == 0 || len(sent) != updateAttempts {
		t.Fatalf("exit %d after %d PUTs (%s), want a failure after %d", res.code, len(sent), res.stderr, updateAttempts)
	}
	if !strings.Contains(res.stderr, "changed") {
		t.Fatalf("stderr %q does not say the client changed", res.stderr)
	}
}
