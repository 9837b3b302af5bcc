package client

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/syvault/syvault/http/api"
)

// The API's shapes, shared with the server (package api).
type (
	// Lease is a lease's credentials as a create answers them.
	Lease = api.Lease
	// LeaseInfo is a lease as lists and gets show it (no password).
	LeaseInfo = api.LeaseInfo
	// LeasePage is one page of active leases.
	LeasePage = api.LeasePage
	// Grant is a target's grant.
	Grant = api.Grant
	// Target is a dynamic secret target. AdminPassword is only ever sent, never received.
	Target = api.Target
	// AppClient is a registered client.
	AppClient = api.Client
	// AuditEvent is one entry of the audit trail.
	AuditEvent = api.AuditEvent
	// AuditPage is one page of the audit trail.
	AuditPage = api.AuditPage
)

const base = "/api/sm/v1"

// CreateLease asks for credentials on a target for ttlSeconds.
func (c *Client) CreateLease(ctx context.Context, recordUID string, ttlSeconds int) (*Lease, error) {
	var l Lease
	err := c.Do(ctx, http.MethodPost, base+"/dynamic/lease", map[string]any{"record_uid": recordUID, "ttl_seconds": ttlSeconds}, &l)
	return &l, err
}

// ListLeasesOptions filter and page ListLeases.
type ListLeasesOptions struct {
	RecordUID string
	Limit     int
	Cursor    string
}

// ListLeases returns one page of active leases, oldest first.
func (c *Client) ListLeases(ctx context.Context, o ListLeasesOptions) (*LeasePage, error) {
	q := url.Values{}
	if o.RecordUID != "" {
		q.Set("record_uid", o.RecordUID)
	}
	if o.Limit != 0 {
		q.Set("limit", strconv.Itoa(o.Limit))
	}
	if o.Cursor != "" {
		q.Set("cursor", o.Cursor)
	}
	path := base + "/dynamic/leases"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var p LeasePage
	err := c.Do(ctx, http.MethodGet, path, nil, &p)
	return &p, err
}

// GetLease returns one lease, ended or not.
func (c *Client) GetLease(ctx context.Context, id string) (*LeaseInfo, error) {
	var l LeaseInfo
	err := c.Do(ctx, http.MethodGet, base+"/dynamic/leases/"+url.PathEscape(id), nil, &l)
	return &l, err
}

// RevokeLease revokes a lease; it returns once the user is dropped.
func (c *Client) RevokeLease(ctx context.Context, id string) error {
	return c.Do(ctx, http.MethodDelete, base+"/dynamic/leases/"+url.PathEscape(id), nil, nil)
}

// ForceRevokeLease revokes a lease and, when its user cannot be dropped (its database
// gone for good), gives the drop up (admin only): the lease as it ended, Abandoned when
// its user may remain on the database.
func (c *Client) ForceRevokeLease(ctx context.Context, id string) (*LeaseInfo, error) {
	var l LeaseInfo
	err := c.Do(ctx, http.MethodDelete, base+"/dynamic/leases/"+url.PathEscape(id)+"?force=true", nil, &l)
	if err == nil && l.LeaseID == "" {
		// A server of an earlier version revokes without force and answers nothing.
		return &l, errors.New("client: the server answered a forced revocation as a plain one (an earlier version): the lease is revoked, nothing was given up")
	}
	return &l, err
}

// RenewLease extends a lease to now + ttlSeconds, within its caps.
func (c *Client) RenewLease(ctx context.Context, id string, ttlSeconds int) (*LeaseInfo, error) {
	var l LeaseInfo
	err := c.Do(ctx, http.MethodPost, base+"/dynamic/leases/"+url.PathEscape(id)+"/renew", map[string]int{"ttl_seconds": ttlSeconds}, &l)
	return &l, err
}

// CreateTarget registers a target; the server verifies it first. Warnings in t (a saved
// answer) are not sent: they are the server's to say.
func (c *Client) CreateTarget(ctx context.Context, t Target) (*Target, error) {
	t.Warnings = nil
	var out Target
	err := c.Do(ctx, http.MethodPost, base+"/dynamic/targets", t, &out)
	return &out, err
}

// ListTargets returns every target.
func (c *Client) ListTargets(ctx context.Context) ([]Target, error) {
	var out struct {
		Data []Target `json:"data"`
	}
	err := c.Do(ctx, http.MethodGet, base+"/dynamic/targets", nil, &out)
	return out.Data, err
}

// GetTarget returns one target.
func (c *Client) GetTarget(ctx context.Context, uid string) (*Target, error) {
	var out Target
	h, err := c.do(ctx, http.MethodGet, base+"/dynamic/targets/"+url.PathEscape(uid), nil, nil, &out)
	out.Version = h.Get("ETag")
	return &out, err
}

// DeleteTarget removes a target; revokeLeases revokes its active leases first.
func (c *Client) DeleteTarget(ctx context.Context, uid string, revokeLeases bool) error {
	path := base + "/dynamic/targets/" + url.PathEscape(uid)
	if revokeLeases {
		path += "?revoke_leases=true"
	}
	return c.Do(ctx, http.MethodDelete, path, nil, nil)
}

// ForceDeleteTarget removes a target whose database is gone for good: its leases are
// revoked, and the revocations that cannot finish given up (ForceRevokeLease).
func (c *Client) ForceDeleteTarget(ctx context.Context, uid string) error {
	return c.Do(ctx, http.MethodDelete, base+"/dynamic/targets/"+url.PathEscape(uid)+"?revoke_leases=true&force=true", nil, nil)
}

// UpdateTarget replaces a target's settings (e.g. a rotated admin password); the server
// verifies them first. With t.Version (from GetTarget) the update is made only if the
// target is still at that version: an *Error with status 412 otherwise. t may be a
// target as read (with its AdminPassword set: none is ever read back): its record_uid,
// which must then be uid, created_at and warnings are the server's and are not sent.
func (c *Client) UpdateTarget(ctx context.Context, uid string, t Target) (*Target, error) {
	if t.RecordUID != "" && t.RecordUID != uid {
		return nil, fmt.Errorf("client: the target given is record_uid %s, not %s", t.RecordUID, uid)
	}
	t.RecordUID, t.CreatedAt, t.Warnings = "", time.Time{}, nil
	var out Target
	h, err := c.do(ctx, http.MethodPut, base+"/dynamic/targets/"+url.PathEscape(uid), ifMatch(t.Version), t, &out)
	out.Version = h.Get("ETag")
	return &out, err
}

// ifMatch is the header that makes an update conditional on version; none without one.
func ifMatch(version string) http.Header {
	if version == "" {
		return nil
	}
	return http.Header{"If-Match": {version}}
}

// CreateClient registers a client by its public key (admin only).
func (c *Client) CreateClient(ctx context.Context, ac AppClient) (*AppClient, error) {
	var out AppClient
	err := c.Do(ctx, http.MethodPost, base+"/clients", ac, &out)
	return &out, err
}

// UpdateClient replaces client id's settings with ac's (admin only): name, public key,
// role, allowed records and caps; its id and creation time stay. With ac.Version (from
// GetClient) the update is made only if the client is still at that version: an *Error
// with status 412 otherwise. ac may be a client as read: its client_id, which must then
// be id, and created_at are the server's and are not sent.
func (c *Client) UpdateClient(ctx context.Context, id string, ac AppClient) (*AppClient, error) {
	if ac.ClientID != "" && ac.ClientID != id {
		return nil, fmt.Errorf("client: the client given is client_id %s, not %s", ac.ClientID, id)
	}
	ac.ClientID, ac.CreatedAt = "", time.Time{}
	var out AppClient
	h, err := c.do(ctx, http.MethodPut, base+"/clients/"+url.PathEscape(id), ifMatch(ac.Version), ac, &out)
	out.Version = h.Get("ETag")
	return &out, err
}

// ListClients returns every client (admin only).
func (c *Client) ListClients(ctx context.Context) ([]AppClient, error) {
	var out struct {
		Data []AppClient `json:"data"`
	}
	err := c.Do(ctx, http.MethodGet, base+"/clients", nil, &out)
	return out.Data, err
}

// DeleteClient removes a client; its tokens stop working at once (admin only).
func (c *Client) DeleteClient(ctx context.Context, id string) error {
	return c.Do(ctx, http.MethodDelete, base+"/clients/"+url.PathEscape(id), nil, nil)
}

// AuditOptions filter the audit replay; zero values filter nothing.
type AuditOptions struct {
	Since, Until                 time.Time
	RecordUID, LeaseID, ClientID string
	Limit                        int
	Cursor                       string
}

// Audit returns one page of the audit trail, oldest first (admin only).
func (c *Client) Audit(ctx context.Context, o AuditOptions) (*AuditPage, error) {
	q := url.Values{}
	for k, v := range map[string]string{"record_uid": o.RecordUID, "lease_id": o.LeaseID, "client_id": o.ClientID, "cursor": o.Cursor} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if !o.Since.IsZero() {
		q.Set("since", o.Since.UTC().Format(time.RFC3339Nano))
	}
	if !o.Until.IsZero() {
		q.Set("until", o.Until.UTC().Format(time.RFC3339Nano))
	}
	if o.Limit != 0 {
		q.Set("limit", strconv.Itoa(o.Limit))
	}
	path := base + "/audit"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var p AuditPage
	err := c.Do(ctx, http.MethodGet, path, nil, &p)
	return &p, err
}

// GetClient returns one client (admin only).
func (c *Client) GetClient(ctx context.Context, id string) (*AppClient, error) {
	var out AppClient
	h, err := c.do(ctx, http.MethodGet, base+"/clients/"+url.PathEscape(id), nil, nil, &out)
	out.Version = h.Get("ETag")
	return &out, err
}
