package events

import jsonv1 "github.com/go-json-experiment/json/v1"

// Unmarshal reads JSON exactly as encoding/json does (TestUnmarshal_AsEncodingJSON), with
// the v1 decoder of go-json-experiment/json: encoding/json's semantics on the v2 engine
// the standard library has behind GOEXPERIMENT=jsonv2. Events and records are read far
// more often than written (every event by the workers and the projector, a lease's
// history by each decision on it, a hundred records by a list page), and it reads them in
// less than half the time and a fraction of the allocations (BenchmarkDecodeLeaseRecord,
// BenchmarkDecodeEvent). Payloads written by another version of SyVault must read the
// same, unknown fields and all, hence the equivalence tests.
func Unmarshal(data []byte, v any) error { return jsonv1.Unmarshal(data, v) }
