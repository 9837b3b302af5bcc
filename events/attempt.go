package events

import "encoding/json"

// Attempt ops: what the database work reported on AttemptSubject was for.
const (
	AttemptRevoke = "revoke"
	AttemptRenew  = "renew"
)

// Attempt is a worker's report of one piece of database work on a lease: a failure
// (Error, Message: the API error it maps to, never a secret), or for a renewal, Applied,
// the lease's sequence whose expiry the database now holds.
type Attempt struct {
	Op      string `json:"op"`
	Error   Code   `json:"error,omitempty"`
	Message string `json:"message,omitempty"`
	Applied uint64 `json:"applied,omitempty"`
}

// FailedAttempt is the report of op on a lease failing with err.
func FailedAttempt(op string, err error) Attempt {
	return Attempt{Op: op, Error: ErrorCode(err), Message: ErrorMessage(err)}
}

// Encode is the attempt as sent on AttemptSubject.
func (a Attempt) Encode() []byte {
	data, _ := json.Marshal(a) // a struct of strings and a number always marshals
	return data
}

// DecodeAttempt reads a report sent on AttemptSubject. Reports without an op come from
// revocations (as older workers sent them).
func DecodeAttempt(data []byte) (Attempt, bool) {
	var a Attempt
	if Unmarshal(data, &a) != nil {
		return Attempt{}, false
	}
	if a.Op == "" {
		a.Op = AttemptRevoke
	}
	return a, true
}

// Err is the failure the attempt reports, nil for a success.
func (a Attempt) Err() error {
	if a.Error == "" {
		return nil
	}
	return Errorf(a.Error, "%s", a.Message)
}
