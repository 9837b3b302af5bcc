package jsstore

import (
	"context"
	"fmt"
	"strings"
)

// StreamSize is what one of SyVault's streams holds (a KV bucket is a stream too, named
// KV_ and the bucket's name). Subjects is what sizes NATS: it keeps per-subject state in
// memory for each and rebuilds it at every start, and the events stream, the audit log,
// holds a subject for every lease ever made.
type StreamSize struct {
	Name     string
	Messages uint64
	Bytes    uint64
	Subjects uint64
}

// Sizes lists SyVault's streams and what each holds. It is one request to JetStream's
// stream list (per 256 streams of the account), answered from each stream's running
// totals: its cost grows with the number of streams, not of leases or messages. Streams
// of the account that are not SyVault's (a shared NATS) are left out.
func (s *Store) Sizes(ctx context.Context) ([]StreamSize, error) {
	var sizes []StreamSize
	list := s.js.ListStreams(ctx)
	for info := range list.Info() {
		name := info.Config.Name
		if !strings.HasPrefix(name, "SYVAULT_") && !strings.HasPrefix(name, "KV_SYVAULT_") {
			continue
		}
		sizes = append(sizes, StreamSize{Name: name, Messages: info.State.Msgs, Bytes: info.State.Bytes, Subjects: info.State.NumSubjects})
	}
	if err := list.Err(); err != nil {
		return nil, unavailable(fmt.Errorf("jsstore.Sizes: %w", err))
	}
	return sizes, nil
}
