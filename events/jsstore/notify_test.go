package jsstore_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/syvault/syvault/events"
	"github.com/syvault/syvault/events/jsstore/jstest"
)

// TestWatch_InPlaceBeforeTheNextAppend: a watch costs no round trip, yet a worker on
// another connection that has seen the append made right after it always finds the
// requester waiting and reaches the watch with its report. Were the watch not in place
// by then, a worker would take a waiting requester for gone and drop its user.
func TestWatch_InPlaceBeforeTheNextAppend(t *testing.T) {
	ctx := context.Background()
	srv := jstest.MustServer(t, "")
	api, worker := srv.MustStore(t), srv.MustStore(t)
	for i := range 200 {
		id := fmt.Sprintf("L%d", i)
		w, err := api.Watch([]string{events.AttemptSubject(id)}, events.WaitingSubject(id))
		if err != nil {
			t.Fatal(err)
		}
		e := events.Event{Type: events.LeaseRequested, ID: id + ".requested", LeaseID: id, Time: time.Now().UTC()}
		if _, err := api.Append(ctx, events.LeaseSubject(id), e, 0); err != nil {
			t.Fatal(err)
		}
		if _, seqs, err := worker.History(ctx, events.LeaseSubject(id)); err != nil || len(seqs) != 1 {
			t.Fatalf("the worker does not see the request: %v %v", seqs, err)
		}
		if !worker.Ask(ctx, events.WaitingSubject(id)) {
			t.Fatalf("lease %d: the worker found nobody waiting", i)
		}
		worker.Notify(events.AttemptSubject(id), []byte("report"))
		select {
		case m := <-w.C():
			if string(m.Data) != "report" {
				t.Fatalf("got %q", m.Data)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("lease %d: the worker's report never reached the watch", i)
		}
		w.Stop()
	}
}
