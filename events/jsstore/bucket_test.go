package jsstore_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/syvault/syvault/events/jsstore"
	"github.com/syvault/syvault/events/jsstore/jstest"
)

// TestBucket_AnswersAtOnceOnAFreshCluster: a bucket Bucket hands back answers its first
// read. Right after an R3 bucket is created, no server of the cluster may answer a
// direct get of it yet, and a read then fails with "no responders" rather than "not
// found". (A server failed to start that way: "tokenkey: load: nats: no responders
// available for request", its key bucket read the moment it was created. On a busy
// machine, one of twenty buckets read that way failed in each of three runs.)
func TestBucket_AnswersAtOnceOnAFreshCluster(t *testing.T) {
	ctx := context.Background()
	servers, urls := jstest.MustCluster(t)
	s, err := jsstore.Open(ctx, connector(t, servers[0], urls)(), jsstore.Config{Replicas: 3})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		kv, err := s.Bucket(ctx, jetstream.KeyValueConfig{Bucket: fmt.Sprintf("fresh%d", i), Storage: jetstream.FileStorage})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := kv.Get(ctx, "missing"); !errors.Is(err, jetstream.ErrKeyNotFound) {
			t.Fatalf("bucket %d: first read of a missing key: %v; want %v", i, err, jetstream.ErrKeyNotFound)
		}
	}
}
