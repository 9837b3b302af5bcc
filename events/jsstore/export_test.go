package jsstore

// ReadFromLeader makes s read through the leader's API even where a direct get would do.
func ReadFromLeader(s *Store) { s.leaderReads = true }
