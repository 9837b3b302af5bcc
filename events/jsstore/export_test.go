package jsstore

// ReadFromLeader makes s read through the leader's API even where a direct get would do.
func ReadFromLeader(s *Store) { s.leaderReads = true }

// HoldArming stands in for another caller of this process publishing second's schedule:
// the publish is under way until end is called with its outcome.
func HoldArming(s *Store, second int64) (end func(err error)) {
	a, _ := s.scheduled.begin(second)
	return func(err error) { s.scheduled.finish(second, a, err) }
}
