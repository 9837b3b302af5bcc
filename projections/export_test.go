package projections

// RecordReads is how many lease records lists have read so far.
func (p *Projections) RecordReads() int64 { return p.recordReads.Load() }
