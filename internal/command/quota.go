package command

import (
	"context"
	"sync"

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
	// listed counts a client's listed leases as far as want (Projections.ListedAtLeast).
	listed func(ctx context.Context, clientID string, want int) (int, error)

	mu      sync.Mutex
	clients map[string]*clientQuota
}

// clientQuota is one capped client's admissions under way: mu orders them, so two of
// its creates cannot both take the last slot.
type clientQuota struct {
	mu       sync.Mutex
	inFlight int
	users    int // holders of this entry, to forget it when none is left
}

func newLeaseQuotas(p *projections.Projections) *leaseQuotas {
	return &leaseQuotas{clients: map[string]*clientQuota{}, listed: p.ListedAtLeast}
}

// admit takes a slot of client's cap for one create, or refuses with ETooManyLeases; done
// gives the slot back once the create is settled: active (the index counts it from
// then on) or not made. A client without a cap costs nothing here.
func (q *leaseQuotas) admit(ctx context.Context, client events.Client) (done func(), err error) {
	if client.MaxLeases <= 0 {
		return func() {}, nil
	}
	q.mu.Lock()
	c := q.clients[client.ClientID]
	if c == nil {
		c = &clientQuota{}
		q.clients[client.ClientID] = c
	}
	c.users++
	q.mu.Unlock()

	c.mu.Lock()
	want := client.MaxLeases - c.inFlight
	n := 0
	if want > 0 {
		n, err = q.listed(ctx, client.ClientID, want)
	}
	if err == nil && n >= want {
		err = events.Errorf(events.ETooManyLeases, "This client already holds %d leases, its max_leases; revoke one or let one end "+
			"(a lease counts until its user is dropped) before asking for another.", client.MaxLeases)
	}
	if err == nil {
		c.inFlight++
	}
	c.mu.Unlock()
	if err != nil {
		q.release(client.ClientID, c, false)
		return nil, err
	}
	var once sync.Once
	return func() { once.Do(func() { q.release(client.ClientID, c, true) }) }, nil
}

func (q *leaseQuotas) release(id string, c *clientQuota, admitted bool) {
	if admitted {
		c.mu.Lock()
		c.inFlight--
		c.mu.Unlock()
	}
	q.mu.Lock()
	if c.users--; c.users == 0 {
		delete(q.clients, id)
	}
	q.mu.Unlock()
}
