package events_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/syvault/syvault/events"
	"github.com/syvault/syvault/internal/jsontest"
)

func fullRequest() events.Event {
	now := time.Date(2026, 12, 3, 7, 30, 1, 987654321, time.UTC)
	return events.RequestLease(events.LeaseRequest{LeaseID: "019ae3a4-5b6c-7d8e-9f01-23456789abcd", ClientID: "13e4c2b5-c3f3-4071-9bf6-49c4d1f1f99d",
		Target: events.Target{RecordUID: "7Kj9mNpQ2xRs", Name: "orders", Engine: events.MySQL, Host: "db.internal", Port: 3306, Database: "orders",
			AdminUsername: "syvault_admin", SealedAdminPassword: []byte{9, 8, 7, 255, 0}, TLSMode: "verify-full", MaxTTLSeconds: 3600,
			Grants:    []events.Grant{{Database: "orders", Tables: []string{"orders", "lines"}, Privileges: []string{"SELECT", "INSERT"}}},
			CreatedAt: now.Add(-time.Hour)},
		TTLSeconds: 900, Username: "vf_tmp_abcdefgh", SealedPassword: []byte{1, 2, 3, 4, 200}, SealedVerifier: []byte{5, 6},
		Now: now, Deadline: now.Add(20 * time.Second)})
}

// TestUnmarshal_AsEncodingJSON: the events a process reads may have been written by
// another version of SyVault, and an attempt report by another process: the faster
// decoder must read them exactly as encoding/json does, including what a later version
// adds and what no version writes.
func TestUnmarshal_AsEncodingJSON(t *testing.T) {
	full, err := json.Marshal(fullRequest())
	if err != nil {
		t.Fatal(err)
	}
	jsontest.SameAsEncodingJSON[events.Event](t, full)
	client, err := json.Marshal(events.Event{Type: "client.registered", ID: "c1.registered", Time: time.Now(), ClientID: "c1",
		Client: &events.Client{ClientID: "c1", Name: "app", PublicKey: "-----BEGIN PUBLIC KEY-----\n...", Role: "app", AllowedRecords: []string{"r1", "r2"}}})
	if err != nil {
		t.Fatal(err)
	}
	jsontest.SameAsEncodingJSON[events.Event](t, client)
	for _, raw := range []string{
		`{"type":"lease.revoked","id":"L.revoked","prev":12,"time":"2026-12-03T07:30:01Z","lease_id":"L","client_id":"admin"}`,
		`{"type":"lease.activated","id":"L.activated","lease":null,"target":null,"added_by_a_later_version":{"a":[1,2,{"b":null}]}}`,
		`{"type":"lease.requested","lease":{"username":"u","sealed_password":"AQID","target":{"grants":[{"privileges":["SELECT"]}]}}}`,
		`{"type":"lease.requested","lease":{"sealed_password":"not base64!"}}`,
		`{"type":"lease.expired","expires_at":"not a time"}`,
		`{"type":"lease.renewed","ttl_seconds":"900"}`,
		`{"type":"lease.renewed","ttl_seconds":1e3}`,
		`{"Type":"lease.revoked","LEASE_ID":"L"}`,
		`{"type":"lease.revoked","type":"lease.expired"}`,
		`{"type":"lease.revoked",`,
		"{\"type\":\"lease.revoked\",\"reason\":\"bad \xff byte\"}",
		`{"type":"lease.renewed","ttl_seconds":1e100}`,
		`{"type":"lease.revoked","reason":"\ud800 lone surrogate"}`,
		`[]`,
		`null`,
	} {
		jsontest.SameAsEncodingJSON[events.Event](t, []byte(raw))
	}
	for _, raw := range []string{
		`{"op":"renew","applied":42}`,
		`{"error":"target_unavailable","message":"The target database could not be reached."}`,
		`{"op":"revoke","applied":-1}`,
		`not json`,
	} {
		jsontest.SameAsEncodingJSON[events.Attempt](t, []byte(raw))
	}
}

// BenchmarkDecodeEvent: a lease's request, the largest event the workers and the
// projector decode on every create.
func BenchmarkDecodeEvent(b *testing.B) { jsontest.BenchmarkDecoders[events.Event](b, fullRequest()) }
