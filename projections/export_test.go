package projections

import "context"

// RecordReads is how many lease records lists have read so far.
func (p *Projections) RecordReads() int64 { return p.recordReads.Load() }

// ExactPages is how many index pages lists have read again with their sequences.
func (p *Projections) ExactPages() int64 { return p.exactPages.Load() }

// CheckBucketEveryTime makes the projector read the lease bucket's creation time before
// every use of the records it remembers, until the test ends.
func CheckBucketEveryTime(t interface{ Cleanup(func()) }) {
	old := writtenCheck
	writtenCheck = 0
	t.Cleanup(func() { writtenCheck = old })
}

// HoldsLease reports whether the lease bucket holds a record for lease id.
func (p *Projections) HoldsLease(ctx context.Context, id string) bool {
	_, err := p.getLease(ctx, id)
	return err == nil
}

// IndexReads counts the index pages lists read.
func (p *Projections) IndexReads() int64 { return p.indexReads.Load() }
