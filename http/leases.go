package http

import (
	"context"
	"crypto/rand"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"
	"github.com/nats-io/nats.go"

	"github.com/syvault/syvault/events"
	"github.com/syvault/syvault/projections"
)

type leaseRequest struct {
	RecordUID  *string `json:"record_uid"`
	TTLSeconds *int    `json:"ttl_seconds"`
}

// leaseCreated is the answer to a lease request: the seed's five fields first.
type leaseCreated struct {
	LeaseID          string    `json:"lease_id"`
	Username         string    `json:"username"`
	Password         string    `json:"password"`
	ConnectionString string    `json:"connection_string"`
	ExpiresAt        time.Time `json:"expires_at"`
	RecordUID        string    `json:"record_uid"`
	CreatedAt        time.Time `json:"created_at"`
	Engine           string    `json:"engine"`
	Host             string    `json:"host"`
	Port             int       `json:"port"`
	Database         string    `json:"database"`
}

// leaseItem is a lease as lists and gets show it.
type leaseItem struct {
	LeaseID    string     `json:"lease_id"`
	RecordUID  string     `json:"record_uid"`
	Username   string     `json:"username"`
	CreatedAt  time.Time  `json:"created_at"`
	ExpiresAt  time.Time  `json:"expires_at"`
	Status     string     `json:"status"`
	EndedAt    *time.Time `json:"ended_at,omitempty"`
	ClientID   string     `json:"client_id,omitempty"`
	TTLSeconds int        `json:"ttl_seconds"`
}

func itemOf(l events.Lease) leaseItem {
	return leaseItem{LeaseID: l.ID, RecordUID: l.RecordUID, Username: l.Username, CreatedAt: l.CreatedAt,
		ExpiresAt: l.ExpiresAt, Status: string(l.Status), EndedAt: l.EndedAt, ClientID: l.ClientID, TTLSeconds: l.TTLSeconds}
}

func (s *Server) createLease(c echo.Context) error {
	var req leaseRequest
	if err := decodeJSON(c, &req); err != nil {
		return err
	}
	switch {
	case req.RecordUID == nil || *req.RecordUID == "":
		return events.Errorf(events.EInvalid, "record_uid is required.")
	case req.TTLSeconds == nil:
		return events.Errorf(events.EInvalid, "ttl_seconds is required.")
	}
	if err := events.ValidTTL(*req.TTLSeconds, events.MaxTTLSeconds); err != nil {
		return err
	}
	client := clientOf(c)
	if err := s.allow(c, actLeaseCreate, resource{RecordUID: *req.RecordUID}); err != nil {
		return err
	}
	ctx := c.Request().Context()
	target, err := s.cfg.Projections.Target(ctx, *req.RecordUID)
	if err != nil {
		return err
	}
	if err := events.ValidTTL(*req.TTLSeconds, capTTL(target.MaxTTLSeconds, client.MaxTTLSeconds)); err != nil {
		return err
	}
	start := time.Now()
	res, err := s.newLease(ctx, client, target, *req.TTLSeconds)
	s.cfg.Observer.LeaseCreated(target.RecordUID, outcomeOf(err), time.Since(start))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, res)
}

func outcomeOf(err error) string {
	if err == nil {
		return events.OutcomeOK
	}
	return string(events.ErrorCode(err))
}

func capTTL(caps ...int) int {
	m := events.MaxTTLSeconds
	for _, c := range caps {
		if c > 0 && c < m {
			m = c
		}
	}
	return m
}

// newLease appends the request and answers once the workers have created the user, or
// failed to. If they take longer than the request timeout, it records the lease as failed
// on condition that it is still pending, so a late create is undone by the worker and no
// active lease exists that nobody received.
func (s *Server) newLease(ctx context.Context, client events.Client, target events.Target, ttl int) (*leaseCreated, error) {
	id, err := uuid.NewV7()
	if err != nil {
		return nil, err
	}
	now := time.Now().UTC()
	// The API shows whole seconds, and expires_at is exactly created_at + ttl; the event
	// itself keeps the precise time for the audit.
	expires := events.LeaseCreatedAt(now).Add(time.Duration(ttl) * time.Second)
	username, err := s.reserveUsername(ctx, id.String())
	if err != nil {
		return nil, err
	}
	password := newPassword()
	spec := &events.LeaseSpec{
		Username:       username,
		SealedPassword: s.cfg.Sealer.Seal([]byte(password), []byte(id.String())),
		Deadline:       now.Add(s.cfg.RequestTimeout),
		Target:         target,
	}
	ev := events.Event{Type: events.LeaseRequested, ID: id.String() + ".requested", Time: now, ClientID: client.ClientID,
		RecordUID: target.RecordUID, LeaseID: id.String(), TTLSeconds: ttl, ExpiresAt: expires, Lease: spec}

	ctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
	defer cancel()
	w, err := s.watch(id.String())
	if err != nil {
		return nil, err
	}
	defer w.stop()
	// Tell the workers someone is waiting for these credentials, until the answer goes.
	nc := s.cfg.Store.Conn()
	waiting, err := nc.Subscribe(events.WaitingSubject(id.String()), func(m *nats.Msg) { _ = m.Respond(nil) })
	if err == nil {
		err = nc.FlushWithContext(ctx)
	}
	if err != nil {
		return nil, events.Wrap(err, events.EUnavailable, "The event store is unavailable; try again shortly.")
	}
	defer func() { _ = waiting.Unsubscribe() }()
	if _, err := s.cfg.Store.Append(ctx, events.LeaseSubject(id.String()), ev, 0); err != nil {
		return nil, err
	}
	l, err := w.until(ctx, s, func(l events.Lease) bool { return l.Status != events.StatusPending })
	if err != nil {
		// Out of time, or the store stopped answering: settle the lease before answering.
		if l, err = s.giveUp(id.String()); err != nil {
			return nil, err
		}
	}
	switch l.Status {
	case events.StatusActive:
	case events.StatusFailed:
		return nil, failure(l)
	default:
		return nil, events.Errorf(events.EConflict, "The lease was revoked before it was created.")
	}
	// The lease is active: from here on the caller must get its credentials, even if the
	// read side is slow to show it.
	wctx, wcancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer wcancel()
	if _, err := s.cfg.Projections.WaitLease(wctx, l.ID, l.Seq); err != nil {
		s.log.Warn("answering a lease the read side does not show yet", "lease_id", l.ID, "err", err)
	}
	host, port := target.ConnectionAddress()
	return &leaseCreated{
		LeaseID: l.ID, Username: username, Password: password,
		ConnectionString: connectionString(target.Engine, host, port, target.Database, username, password),
		ExpiresAt:        l.ExpiresAt, RecordUID: l.RecordUID, CreatedAt: l.CreatedAt,
		Engine: string(target.Engine), Host: host, Port: port, Database: target.Database,
	}, nil
}

// giveUp records a lease the workers did not finish in time as failed, unless it became
// active in the meantime, in which case that is the answer.
func (s *Server) giveUp(id string) (events.Lease, error) {
	// The request's own context is spent; this bookkeeping must still happen.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	l, seq, err := s.cfg.Store.DecideLease(ctx, id, func(l events.Lease) (*events.Event, error) {
		if l.Status != events.StatusPending {
			return nil, nil // settled meanwhile: that is the answer
		}
		return &events.Event{Type: events.LeaseFailed, ID: id + ".failed", Time: time.Now().UTC(), ClientID: l.ClientID,
			RecordUID: l.RecordUID, LeaseID: id, Outcome: string(events.ETimeout),
			Reason: "The workers did not create the user before the request deadline."}, nil
	})
	if err == nil && seq != 0 {
		err = events.Errorf(events.ETimeout, "The lease was not created in time; nothing was left behind. Try again.")
	}
	return l, err
}

func failure(l events.Lease) error {
	switch events.Code(l.FailCode) {
	case events.ETargetUnavailable:
		return events.Errorf(events.ETargetUnavailable, "The target database could not be reached or refused the admin login; no lease was created.")
	case events.ETimeout:
		return events.Errorf(events.ETimeout, "The lease was not created in time; nothing was left behind. Try again.")
	}
	return events.Errorf(events.ETargetUnavailable, "The target database refused to create the user; no lease was created.")
}

// connectionString is a URI that libpq and MySQL clients accept, with the password
// percent-encoded.
func connectionString(engine events.Engine, host string, port int, database, user, password string) string {
	scheme := "postgresql"
	if engine == events.MySQL {
		scheme = "mysql"
	}
	u := url.URL{Scheme: scheme, User: url.UserPassword(user, password), Host: net.JoinHostPort(host, strconv.Itoa(port)), Path: "/" + database}
	return u.String()
}

const (
	usernameAlphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	passwordAlphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789#$%&*+-=?@^_~!"
	passwordSymbols  = "#$%&*+-=?@^_~!"
	passwordLength   = 24
)

func randomString(alphabet string, n int) string {
	b := make([]byte, n)
	max := big.NewInt(int64(len(alphabet)))
	for i := range b {
		v, err := rand.Int(rand.Reader, max)
		if err != nil {
			panic(err) // crypto/rand does not fail on supported platforms
		}
		b[i] = alphabet[v.Int64()]
	}
	return string(b)
}

func newUsername() string { return "vf_tmp_" + randomString(usernameAlphabet, 8) }

// newPassword returns 24 characters from crypto/rand with at least one symbol, one digit,
// one lower and one upper case letter, since some databases' password policies ask so.
func newPassword() string {
	for {
		p := randomString(passwordAlphabet, passwordLength)
		var lower, upper, digit, symbol bool
		for _, r := range p {
			switch {
			case r >= 'a' && r <= 'z':
				lower = true
			case r >= 'A' && r <= 'Z':
				upper = true
			case r >= '0' && r <= '9':
				digit = true
			default:
				symbol = true
			}
		}
		if lower && upper && digit && symbol {
			return p
		}
	}
}

func (s *Server) listLeases(c echo.Context) error {
	recordUID, err := queryID(c, "record_uid")
	if err != nil {
		return err
	}
	q := projections.LeaseQuery{RecordUID: recordUID, Cursor: c.QueryParam("cursor"), Limit: 100}
	if v := c.QueryParam("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			return events.Errorf(events.EInvalid, "limit must be an integer between 1 and 1000.")
		}
		q.Limit = n
	}
	if err := s.allow(c, actLeaseList, resource{}); err != nil {
		return err
	}
	if client := clientOf(c); client.Role != events.RoleAdmin {
		q.ClientID = client.ClientID
	}
	page, next, err := s.cfg.Projections.ActiveLeases(c.Request().Context(), q)
	if err != nil {
		return err
	}
	out := struct {
		Data       []leaseItem `json:"data"`
		NextCursor string      `json:"next_cursor,omitempty"`
	}{Data: make([]leaseItem, 0, len(page)), NextCursor: next}
	for _, l := range page {
		out.Data = append(out.Data, itemOf(l))
	}
	return c.JSON(http.StatusOK, out)
}

// authorizedLease loads a lease from the projection and checks act on it.
func (s *Server) authorizedLease(c echo.Context, act action) (events.Lease, error) {
	id := c.Param("id")
	l, err := s.cfg.Projections.Lease(c.Request().Context(), id)
	if err != nil {
		return l, err
	}
	return l, s.allow(c, act, resource{RecordUID: l.RecordUID, LeaseID: l.ID, Owner: l.ClientID})
}

func (s *Server) getLease(c echo.Context) error {
	l, err := s.authorizedLease(c, actLeaseRead)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, itemOf(l))
}

// revokeLease records the revocation first, then waits for the workers to drop the user.
// Whatever the answer, the revocation is recorded and retried until the user is gone.
func (s *Server) revokeLease(c echo.Context) error {
	if _, err := s.authorizedLease(c, actLeaseRevoke); err != nil {
		return err
	}
	start := time.Now()
	err := s.revoke(c.Request().Context(), c.Param("id"), clientOf(c).ClientID)
	s.cfg.Observer.LeaseRevoked(outcomeOf(err), time.Since(start))
	if err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}

// revoke revokes one lease on behalf of actor and waits until its user is dropped.
// ENotFound for an unknown or ended lease.
func (s *Server) revoke(ctx context.Context, id, actor string) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
	defer cancel()
	w, err := s.watch(id)
	if err != nil {
		return err
	}
	defer w.stop()
	l, seq, err := s.cfg.Store.DecideLease(ctx, id, func(l events.Lease) (*events.Event, error) {
		switch {
		case l.Status.Ended():
			return nil, events.Errorf(events.ENotFound, "Lease %q has already ended.", id)
		case l.Status == events.StatusRevoking:
			return nil, nil // already recorded; wait for it like the first caller
		}
		return &events.Event{Type: events.LeaseRevoked, ID: id + ".revoked", Time: time.Now().UTC(), ClientID: actor,
			RecordUID: l.RecordUID, LeaseID: id, Outcome: events.OutcomeOK}, nil
	})
	if err != nil {
		return err
	}
	recorded := max(seq, l.Seq) // the sequence at which the revocation stands in the stream
	l, err = w.until(ctx, s, func(l events.Lease) bool { return l.Status.Ended() })
	if err != nil {
		// Whatever the answer, a read right after it must show the revocation.
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if _, werr := s.cfg.Projections.WaitLease(wctx, id, recorded); werr != nil {
			s.log.Warn("read side did not show a recorded revocation in time", "lease_id", id, "err", werr)
		}
		if code := events.ErrorCode(err); code == events.ETargetUnavailable || code == events.ETimeout {
			return events.Errorf(code, "%s The revocation is recorded (status: revoking) and is retried until the user is dropped.", events.ErrorMessage(err))
		}
		return err
	}
	_, err = s.cfg.Projections.WaitLease(ctx, id, l.Seq)
	return err
}

type renewRequest struct {
	TTLSeconds *int `json:"ttl_seconds"`
}

func (s *Server) renewLease(c echo.Context) error {
	var req renewRequest
	if err := decodeJSON(c, &req); err != nil {
		return err
	}
	if req.TTLSeconds == nil {
		return events.Errorf(events.EInvalid, "ttl_seconds is required.")
	}
	if err := events.ValidTTL(*req.TTLSeconds, events.MaxTTLSeconds); err != nil {
		return err
	}
	pl, err := s.authorizedLease(c, actLeaseRenew)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	targetMax := 0
	if t, err := s.cfg.Projections.Target(ctx, pl.RecordUID); err == nil {
		targetMax = t.MaxTTLSeconds
	}
	client := clientOf(c)
	maxTTL := time.Duration(capTTL(targetMax, client.MaxTTLSeconds)) * time.Second
	_, seq, err := s.cfg.Store.DecideLease(ctx, pl.ID, func(l events.Lease) (*events.Event, error) {
		if l.Status.Ended() {
			return nil, events.Errorf(events.ENotFound, "Lease %q has already ended.", l.ID)
		}
		exp, ok := l.RenewExpiry(time.Now(), time.Duration(*req.TTLSeconds)*time.Second, maxTTL)
		if !ok && l.Status == events.StatusActive {
			return nil, events.Errorf(events.ENotFound, "Lease %q expired at %s; request a new one.", l.ID, l.ExpiresAt.Format(time.RFC3339))
		}
		if !ok {
			return nil, events.Errorf(events.EConflict, "Only an active lease can be renewed; this one is %s.", l.Status)
		}
		return &events.Event{Type: events.LeaseRenewed, ID: l.ID + ".renewed." + strconv.FormatUint(l.Seq, 10), Time: time.Now().UTC(),
			ClientID: client.ClientID, RecordUID: l.RecordUID, LeaseID: l.ID, TTLSeconds: *req.TTLSeconds, ExpiresAt: exp, Outcome: events.OutcomeOK}, nil
	})
	if err != nil {
		return err
	}
	nl, err := s.cfg.Projections.WaitLease(ctx, pl.ID, seq)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, itemOf(nl))
}

// leaseWatch wakes a waiter whenever a lease's subject gets an event or a worker reports
// a failed attempt on it. Decisions are taken on the lease folded from the stream, never
// on the notification, so a missed notification only delays an answer by the poll period.
type leaseWatch struct {
	id   string
	ch   chan *nats.Msg
	subs []*nats.Subscription
}

func (s *Server) watch(id string) (*leaseWatch, error) {
	w := &leaseWatch{id: id, ch: make(chan *nats.Msg, 16)}
	for _, subj := range []string{events.LeaseSubject(id), events.AttemptSubject(id)} {
		sub, err := s.cfg.Store.Conn().ChanSubscribe(subj, w.ch)
		if err != nil {
			w.stop()
			return nil, events.Wrap(err, events.EUnavailable, "The event store is unavailable; try again shortly.")
		}
		w.subs = append(w.subs, sub)
	}
	return w, nil
}

func (w *leaseWatch) stop() {
	for _, s := range w.subs {
		_ = s.Unsubscribe()
	}
}

// until returns the lease once done holds for it. A worker's report of a failed attempt
// returns that failure at once (the work goes on in the background).
func (w *leaseWatch) until(ctx context.Context, s *Server, done func(events.Lease) bool) (events.Lease, error) {
	poll := time.NewTicker(time.Second)
	defer poll.Stop()
	for {
		l, err := s.cfg.Store.LoadLease(ctx, w.id)
		if err == nil && done(l) {
			return l, nil
		}
		if err != nil && events.ErrorCode(err) != events.ENotFound {
			return l, err
		}
		select {
		case <-ctx.Done():
			return l, events.Errorf(events.ETimeout, "The operation did not finish within the server's deadline.")
		case m := <-w.ch:
			if m.Subject == events.AttemptSubject(w.id) {
				var ae apiError
				if jsonErr := decodeBody(m.Data, &ae); jsonErr == nil && ae.Error != "" {
					return l, events.Errorf(events.Code(ae.Error), "%s", ae.Message)
				}
			}
		case <-poll.C:
		}
	}
}
