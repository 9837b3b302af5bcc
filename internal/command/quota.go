package command

import (
	"context"
	"sync"
	"time"

	"github.com/syvault/syvault/events"
	"github.com/syvault/syvault/projections"
)

// leaseQuotas admits a capped client's creates (max_leases). A lease counts from the
// moment its create is admitted until its user is dropped: the projection lists it from
// its activation to its drop (revoking included, since the user still exists), and this
// process counts its own creates in between. Creates in flight in other processes are
// not seen, so a deployment of several API processes may let a client pass its cap by
// what it has in flight elsewhere at that moment.
type leaseQuotas struct {
	// indexed counts a client's entries in the list index, in one request; listed
	// counts its listed leases but those skip names, as far as want, reading them.
	indexed func(ctx context.Context, clientID string) (int, error)
	listed  func(ctx context.Context, clientID string, skip func(string) bool, want int) (int, error)

	mu      sync.Mutex // guards clients, confirmed and each clientQuota's fields but turn
	clients map[string]*clientQuota
	// confirmed is, per client, the last count read lease by lease, kept for as long as
	// the index holds as many of the client's entries and no create of it settled here:
	// a client asking again and again at its cap is refused on one request each, not on
	// a read of all its leases. It outlives the client's admissions under way; an entry
	// is a few words per capped client that reached its cap.
	confirmed map[string]confirmation
}

type confirmation struct {
	indexed, listed int
	at              time.Time
}

// clientQuota is one capped client's admissions under way.
type clientQuota struct {
	turn     chan struct{}   // one admission of the client at a time, so two cannot take the last slot
	inFlight map[string]bool // leases admitted here whose create has not settled
	users    int             // holders of this entry, to forget it when none is left
}

// confirmedFor is how long a count read lease by lease answers for an unchanged index:
// a lease that ended elsewhere while another of the client became active (the index's
// count unchanged), or whose entry a crash left behind, takes a slot that long at most.
// A revocation answered here frees its slot at once.
const confirmedFor = 5 * time.Second

func newLeaseQuotas(p *projections.Projections) *leaseQuotas {
	return &leaseQuotas{clients: map[string]*clientQuota{}, confirmed: map[string]confirmation{}, indexed: p.IndexedCount, listed: p.ListedAtLeast}
}

// admit takes a slot of client's cap for the create of lease id, or refuses with
// ETooManyLeases (or EUnavailable when ctx ends first: nothing was recorded); done gives
// the slot back once the create is settled: active (the list counts it from then on) or
// not made. A client without a cap costs nothing here.
func (q *leaseQuotas) admit(ctx context.Context, client events.Client, id string) (done func(), err error) {
	if client.MaxLeases <= 0 {
		return func() {}, nil
	}
	q.mu.Lock()
	c := q.clients[client.ClientID]
	if c == nil {
		c = &clientQuota{turn: make(chan struct{}, 1), inFlight: map[string]bool{}}
		q.clients[client.ClientID] = c
	}
	c.users++
	q.mu.Unlock()

	admitted := false
	defer func() {
		if !admitted {
			q.release(client.ClientID, c, "")
		}
	}()
	select {
	case c.turn <- struct{}{}:
	case <-ctx.Done():
		return nil, events.Wrap(ctx.Err(), events.EUnavailable, "The server did not get to this lease request in time, "+
			"behind the client's others; nothing was recorded. Try again.")
	}
	defer func() { <-c.turn }()
	if err := q.check(ctx, client, c); err != nil {
		return nil, err
	}
	q.mu.Lock()
	c.inFlight[id] = true
	q.mu.Unlock()
	admitted = true
	var once sync.Once
	return func() { once.Do(func() { q.release(client.ClientID, c, id) }) }, nil
}

// check refuses a create of client past its cap. The index's count answers below it; at
// it, the count may hold entries of leases that ended a moment ago or that a crash left
// behind, and the client's own creates that became active while they settle, so the
// leases are counted as a list shows them, this process's creates under way aside.
func (q *leaseQuotas) check(ctx context.Context, client events.Client, c *clientQuota) error {
	n, err := q.indexed(ctx, client.ClientID)
	if err != nil {
		return err
	}
	q.mu.Lock()
	inFlight := len(c.inFlight)
	skip := make(map[string]bool, inFlight)
	for id := range c.inFlight {
		skip[id] = true
	}
	conf := q.confirmed[client.ClientID]
	q.mu.Unlock()
	if n+inFlight < client.MaxLeases {
		return nil
	}
	listed := conf.listed
	if conf.at.IsZero() || conf.indexed != n || time.Since(conf.at) > confirmedFor {
		if listed, err = q.listed(ctx, client.ClientID, func(id string) bool { return skip[id] }, client.MaxLeases-inFlight); err != nil {
			return err
		}
		q.mu.Lock()
		q.confirmed[client.ClientID] = confirmation{indexed: n, listed: listed, at: time.Now()}
		q.mu.Unlock()
	}
	if listed+inFlight >= client.MaxLeases {
		return events.Errorf(events.ETooManyLeases, "This client already holds %d leases, its max_leases; revoke one or let one end "+
			"(a lease counts until its user is dropped) before asking for another.", client.MaxLeases)
	}
	return nil
}

// ended says a lease of the client ended here: the confirmed count may hold it.
func (q *leaseQuotas) ended(clientID string) {
	q.mu.Lock()
	delete(q.confirmed, clientID)
	q.mu.Unlock()
}

// release forgets lease id's admission (none for a refused one) and the holder of c.
// A create that settles may leave its lease listed where the confirmed count left it
// out, so that count is not trusted any more.
func (q *leaseQuotas) release(clientID string, c *clientQuota, id string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if id != "" {
		delete(c.inFlight, id)
		delete(q.confirmed, clientID)
	}
	if c.users--; c.users == 0 {
		delete(q.clients, clientID)
	}
}
