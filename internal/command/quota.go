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
// process counts its own creates in between, and for settledFor after an activation,
// until any copy of the index shows it. Creates in flight in other processes are not
// seen, so a deployment of several API processes may let a client pass its cap by what
// it has in flight elsewhere at that moment.
type leaseQuotas struct {
	// indexed counts a client's entries in the list index, in one request; listed
	// counts its listed leases but those skip names, as far as want, reading them.
	indexed func(ctx context.Context, clientID string) (int, error)
	listed  func(ctx context.Context, clientID string, skip func(string) bool, want int) (int, error)
	settle  time.Duration // settledFor

	mu      sync.Mutex // guards clients, confirmed and each clientQuota's fields but turn
	clients map[string]*clientQuota
	// confirmed is, per client, the last refusal's count read lease by lease, kept for
	// as long as the index holds as many of the client's entries and no create of it
	// settled here: a client asking again and again at its cap is refused on one request
	// each, not on a read of all its leases. Only refusals are kept, so a count gone
	// stale can refuse for confirmedFor at most, never admit past the cap. It outlives
	// the client's admissions under way; an entry is a few words per capped client.
	confirmed map[string]confirmation
}

type confirmation struct {
	indexed int // the index's count of the client's entries then
	limit   int // the cap it refused at: a higher cap (an update since) counts again
	at      time.Time
}

// clientQuota is one capped client's admissions under way.
type clientQuota struct {
	turn chan struct{} // one admission of the client at a time, so two cannot take the last slot
	// inFlight holds the leases admitted here whose create has not settled (zero time),
	// and those activated less than settledFor ago (their activation's time).
	inFlight map[string]time.Time
	users    int // holders of this entry, to forget it when none is left
}

// settledFor is how long a lease activated here still counts as in flight: the index's
// count may come from a copy of the stream a few milliseconds behind the one the
// activation was written to.
const settledFor = 2 * time.Second

// confirmedFor is how long a count read lease by lease answers for an unchanged index:
// a lease that ended elsewhere while another of the client became active (the index's
// count unchanged), or whose entry a crash left behind, takes a slot that long at most.
// A revocation answered here frees its slot at once.
const confirmedFor = 5 * time.Second

func newLeaseQuotas(p *projections.Projections) *leaseQuotas {
	return &leaseQuotas{clients: map[string]*clientQuota{}, confirmed: map[string]confirmation{}, indexed: p.IndexedCount, listed: p.ListedAtLeast,
		settle: settledFor}
}

// admit takes a slot of client's cap for the create of lease id, or refuses with
// ETooManyLeases (or EUnavailable when ctx ends first: nothing was recorded); done says
// the create settled: active (the list counts it from then on) or not made. A client
// without a cap costs nothing here.
func (q *leaseQuotas) admit(ctx context.Context, client events.Client, id string) (done func(active bool), err error) {
	if client.MaxLeases <= 0 {
		return func(bool) {}, nil
	}
	q.mu.Lock()
	c := q.clients[client.ClientID]
	if c == nil {
		c = &clientQuota{turn: make(chan struct{}, 1), inFlight: map[string]time.Time{}}
		q.clients[client.ClientID] = c
	}
	c.users++
	q.mu.Unlock()

	admitted := false
	defer func() {
		if !admitted {
			q.release(client.ClientID, c, "", false)
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
	c.inFlight[id] = time.Time{}
	q.mu.Unlock()
	admitted = true
	var once sync.Once
	return func(active bool) { once.Do(func() { q.release(client.ClientID, c, id, active) }) }, nil
}

// check refuses a create of client past its cap. The index's count answers below it; at
// it, the count may hold entries of leases that ended a moment ago or that a crash left
// behind, and the client's own creates that became active while they settle, so the
// leases are counted as a list shows them, this process's creates under way aside.
//
// The creates under way are taken before the index is read: one that settles in between
// is then counted twice (and told apart lease by lease at the cap), never not at all.
func (q *leaseQuotas) check(ctx context.Context, client events.Client, c *clientQuota) error {
	q.mu.Lock()
	q.expire(client.ClientID, c)
	inFlight := len(c.inFlight)
	skip := make(map[string]bool, inFlight)
	for id := range c.inFlight {
		skip[id] = true
	}
	q.mu.Unlock()
	n, err := q.indexed(ctx, client.ClientID)
	if err != nil {
		return err
	}
	if n+inFlight < client.MaxLeases {
		return nil
	}
	q.mu.Lock()
	conf, ok := q.confirmed[client.ClientID]
	q.mu.Unlock()
	if !ok || conf.indexed != n || client.MaxLeases > conf.limit || time.Since(conf.at) > confirmedFor {
		listed, err := q.listed(ctx, client.ClientID, func(id string) bool { return skip[id] }, client.MaxLeases-inFlight)
		if err != nil {
			return err
		}
		if listed+inFlight < client.MaxLeases {
			return nil
		}
		q.mu.Lock()
		q.confirmed[client.ClientID] = confirmation{indexed: n, limit: client.MaxLeases, at: time.Now()}
		q.mu.Unlock()
	}
	return events.Errorf(events.ETooManyLeases, "This client already holds %d leases, its max_leases; revoke one or let one end "+
		"(a lease counts until its user is dropped) before asking for another.", client.MaxLeases)
}

// expire forgets the leases activated here more than settledFor ago, and a refusal's
// count made while they were (the count skipped them). q.mu is held.
func (q *leaseQuotas) expire(clientID string, c *clientQuota) {
	for id, at := range c.inFlight {
		if !at.IsZero() && time.Since(at) >= q.settle {
			delete(c.inFlight, id)
			delete(q.confirmed, clientID)
		}
	}
}

// ended says lease id of the client ended here: neither its activation here nor the
// confirmed count holds it any more.
func (q *leaseQuotas) ended(clientID, id string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	delete(q.confirmed, clientID)
	if c := q.clients[clientID]; c != nil {
		if at, ok := c.inFlight[id]; ok && !at.IsZero() {
			delete(c.inFlight, id)
			q.forgetIdle(clientID, c)
		}
	}
}

// forgetIdle forgets c once nothing of the client is under way or counted. q.mu is held.
func (q *leaseQuotas) forgetIdle(clientID string, c *clientQuota) {
	if c.users == 0 && len(c.inFlight) == 0 {
		delete(q.clients, clientID)
	}
}

// release settles lease id's admission (none for a refused one): an active lease stays
// counted here for settledFor; and forgets a holder of c. A create that settles may
// leave its lease listed where the confirmed count left it out, so that count is not
// trusted any more.
func (q *leaseQuotas) release(clientID string, c *clientQuota, id string, active bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if id != "" {
		if active {
			c.inFlight[id] = time.Now()
		} else {
			delete(c.inFlight, id)
		}
		delete(q.confirmed, clientID)
	}
	q.expire(clientID, c)
	c.users--
	q.forgetIdle(clientID, c)
}
