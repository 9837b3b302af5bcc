package http

import (
	"github.com/syvault/syvault/events"
	"github.com/syvault/syvault/http/api"
)

// What the dashboard (package http/ui) shares with the API, so that both answer alike.

// StatusOf is the HTTP status of an error code.
func StatusOf(code events.Code) int { return statusOf(code) }

// AuditEventOf is an event as the audit trail shows it: the fields an operator may see,
// never a secret nor what events carry for the workers.
func AuditEventOf(r events.Recorded) api.AuditEvent { return auditItemOf(r.Seq, r.Event) }
