package projections

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/syvault/syvault/events"
	"github.com/syvault/syvault/internal/jsontest"
)

func leaseRecord() record[events.Lease] {
	now := time.Date(2026, 12, 2, 16, 40, 2, 123456789, time.UTC)
	ended := now.Add(time.Minute)
	return record[events.Lease]{Seq: 123456, Index: 98765, Value: events.Lease{
		ID: "01a23771-0961-7370-8072-c276dd8681ca", RecordUID: "SCALE0000003", ClientID: "13e4c2b5-c3f3-4071-9bf6-49c4d1f1f99d",
		Username: "vf_tmp_abcdefgh", Status: events.StatusRevoking, TTLSeconds: 86400, CreatedAt: now.Truncate(time.Second),
		ExpiresAt: now.Add(time.Hour).Truncate(time.Second), EndedAt: &ended, Ending: events.StatusExpired, FailCode: "target_unreachable", Seq: 123456}}
}

// The records a process reads may have been written by another version of SyVault: the
// faster decoder must read every record exactly as encoding/json does.
func TestDecode_ReadsRecordsAsEncodingJSON(t *testing.T) {
	lease, err := json.Marshal(leaseRecord())
	if err != nil {
		t.Fatal(err)
	}
	jsontest.SameAsEncodingJSON[record[events.Lease]](t, lease)
	for _, raw := range []string{
		`{"seq":7,"value":{"lease_id":"x","status":"active","ended_at":null,"created_at":"2026-12-02T16:40:02Z"}}`,
		`{"seq":7,"removed":true,"value":{"lease_id":"x","added_by_a_later_version":{"a":[1,2]}}}`,
		`{"seq":7,"value":{"lease_id":"x","expires_at":"not a time"}}`,
		`{"seq":"7"}`,
		`{"seq":7,`,
	} {
		jsontest.SameAsEncodingJSON[record[events.Lease]](t, []byte(raw))
	}
	target, err := json.Marshal(record[events.Target]{Seq: 3, Value: events.Target{RecordUID: "r1", Engine: events.PostgreSQL, Port: 5432,
		SealedAdminPassword: []byte{0, 1, 2, 250}, Grants: []events.Grant{{Database: "app", Schema: "public", Tables: []string{"t"}, Privileges: []string{"SELECT"}}},
		CreatedAt: time.Date(2026, 12, 2, 1, 2, 3, 4, time.UTC)}})
	if err != nil {
		t.Fatal(err)
	}
	jsontest.SameAsEncodingJSON[record[events.Target]](t, target)
	client, err := json.Marshal(record[events.Client]{Seq: 4, Value: events.Client{ClientID: "c", Role: "app", AllowedRecords: []string{"r1"}, MaxTTLSeconds: 60}})
	if err != nil {
		t.Fatal(err)
	}
	jsontest.SameAsEncodingJSON[record[events.Client]](t, client)
}

// BenchmarkDecodeLeaseRecord: a list page decodes a hundred of these.
func BenchmarkDecodeLeaseRecord(b *testing.B) {
	jsontest.BenchmarkDecoders[record[events.Lease]](b, leaseRecord())
}
