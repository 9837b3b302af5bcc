// Package events is SyVault's domain: the events that make up the audit log, the lease
// state machine that folds them, the error codes every layer shares, and the names of the
// streams and subjects they live on. It imports no transport, storage or database package,
// so every other package can depend on it and it can be tested on its own.
package events
