package events

import (
	"context"
	"errors"
	"fmt"
)

// Code is a stable, snake_case error code. The HTTP layer maps each to a status in one
// table; nothing else decides statuses.
type Code string

// The codes a caller can distinguish.
const (
	EInvalid         Code = "invalid_request"
	EInvalidTTL      Code = "invalid_ttl"
	EUnauthenticated Code = "unauthenticated"
	EForbidden       Code = "forbidden"
	ENotFound        Code = "not_found"
	EConflict        Code = "conflict"
	// EPreconditionFailed: the request named the version it was made from (If-Match),
	// and the thing it changes has moved on since.
	EPreconditionFailed Code = "precondition_failed"
	ETooLarge           Code = "too_large"
	ETooManyLeases      Code = "too_many_leases"
	// ERateLimited: an app client asked for tokens, lease creates and renewals faster
	// than the server's --client-rate-limit.
	ERateLimited       Code = "rate_limited"
	EMethodNotAllowed  Code = "method_not_allowed"
	ETargetUnverified  Code = "target_unverified"
	ETargetUnavailable Code = "target_unavailable"
	EUnavailable       Code = "unavailable"
	ETimeout           Code = "timeout"
	EInternal          Code = "internal"
)

// Error is an error a user may see: Message is one sentence saying what to fix and must
// never hold a secret or an internal detail. Err keeps the cause for logs.
type Error struct {
	Code    Code
	Message string
	Err     error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s: %s: %v", e.Code, e.Message, e.Err)
	}
	return fmt.Sprintf("%s: %s", e.Code, e.Message)
}

func (e *Error) Unwrap() error { return e.Err }

// Errorf returns an *Error with a formatted message.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// ErrExpiredBeforeActivated is why a lease whose expiry passed while its user was being
// created was never activated (a short TTL and a slow or paused database): its
// credentials would have reached their requester dead.
var ErrExpiredBeforeActivated = Errorf(ETimeout, "The lease's expiry passed before its user was created; it was not activated.")

// Wrap returns an *Error with the given code and message whose cause is err.
func Wrap(err error, code Code, message string) *Error {
	return &Error{Code: code, Message: message, Err: err}
}

// ErrorCode returns the code of the first *Error in err's chain, or EInternal.
func ErrorCode(err error) Code {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return EInternal
}

// ErrorMessage returns the user-facing message of the first *Error in err's chain, or a
// generic sentence that reveals nothing of an internal error.
func ErrorMessage(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Message
	}
	return "An internal error occurred; the server log has the details."
}

// StoreUnavailable is the error of an operation the event store (NATS JetStream) did not
// complete, defined once: ETimeout when it did not answer in time, EUnavailable
// otherwise. The cause is kept for logs; the message tells the caller to try again.
func StoreUnavailable(err error) *Error {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return Wrap(err, ETimeout, "The event store did not answer in time; try again shortly.")
	}
	return Wrap(err, EUnavailable, "The event store is unavailable; try again shortly.")
}
