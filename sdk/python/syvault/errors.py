"""Exceptions raised by the SyVault SDK.

Every error the server answers (``{"error": "<code>", "message": "..."}``) is raised as a
:class:`SyVaultError` subclass chosen by its ``code`` (or, for codes this SDK does not know,
by its HTTP status). Network failures raise :class:`SyVaultConnectionError`.

Messages never contain the client's private key or an access token.
"""

from typing import Dict, Optional, Type

__all__ = [
    "SyVaultError",
    "ConfigurationError",
    "InvalidRequestError",
    "InvalidTTLError",
    "PayloadTooLargeError",
    "AuthenticationError",
    "PermissionDeniedError",
    "NotFoundError",
    "ConflictError",
    "PreconditionFailedError",
    "TooManyLeasesError",
    "RateLimitedError",
    "TargetUnverifiedError",
    "ServerError",
    "TargetUnavailableError",
    "ServiceUnavailableError",
    "GatewayTimeoutError",
    "SyVaultConnectionError",
    "error_from_response",
]


class SyVaultError(Exception):
    """Base class of every SyVault SDK error.

    Attributes:
        status: the HTTP status of the server's answer, or ``None`` when the error did not
            come from an answer (network failure, bad configuration, unexpected reply).
        code: the server's stable snake_case error code, e.g. ``"not_found"``.
        message: the server's human sentence saying what to fix.
    """

    default_code = "error"

    def __init__(self, message: str, status: Optional[int] = None, code: Optional[str] = None) -> None:
        self.message = message
        self.status = status
        self.code = code if code is not None else self.default_code
        super().__init__(message)

    def __str__(self) -> str:
        if self.status is not None:
            return "%s (%d): %s" % (self.code, self.status, self.message)
        return "%s: %s" % (self.code, self.message)

    def __repr__(self) -> str:
        return "%s(status=%r, code=%r, message=%r)" % (type(self).__name__, self.status, self.code, self.message)

    def __reduce__(self):  # keep status and code across pickling (multiprocessing)
        return (type(self), (self.message, self.status, self.code))


class ConfigurationError(SyVaultError, ValueError):
    """The client was configured wrongly: bad server URL, unreadable or invalid private key."""

    default_code = "invalid_configuration"


class InvalidRequestError(SyVaultError):
    """400: malformed request, unknown or missing field, wrong type."""

    default_code = "invalid_request"


class InvalidTTLError(InvalidRequestError):
    """400 ``invalid_ttl``: ``ttl_seconds`` < 1, > 86400, or above the target's or client's maximum."""

    default_code = "invalid_ttl"


class PayloadTooLargeError(InvalidRequestError):
    """413 ``too_large``: the request body exceeded the server's limit (64 KiB)."""

    default_code = "too_large"


class AuthenticationError(SyVaultError):
    """401 ``unauthenticated``: bad client id or key, replayed or mis-addressed assertion,
    invalid or expired token, or the client was deleted."""

    default_code = "unauthenticated"


class PermissionDeniedError(SyVaultError):
    """403 ``forbidden``: authenticated, but this client may not do that."""

    default_code = "forbidden"


class NotFoundError(SyVaultError):
    """404 ``not_found``: unknown record uid, lease id or client, or a lease that has ended."""

    default_code = "not_found"


class ConflictError(SyVaultError):
    """409 ``conflict``: e.g. deleting a target with active leases, renewing an inactive lease."""

    default_code = "conflict"


class PreconditionFailedError(SyVaultError):
    """412 ``precondition_failed``: the target or client changed since the version the update
    named (``if_match=``, an ETag); read it again and make the change from what it holds now.
    Not a :class:`ConflictError`: sending the same update again can never succeed."""

    default_code = "precondition_failed"


class TooManyLeasesError(SyVaultError):
    """429 ``too_many_leases``: this client holds its ``max_leases``; revoke a lease or let
    one end (a lease counts until its database user is dropped) before asking for another."""

    default_code = "too_many_leases"


class RateLimitedError(SyVaultError):
    """429 ``rate_limited``: this app client asked for tokens, lease creates and renewals
    faster than the server allows (its ``--client-rate-limit``); nothing was done.
    ``retry_after`` is the number of seconds the server said to wait (its ``Retry-After``),
    or ``None``."""

    default_code = "rate_limited"
    retry_after: Optional[int] = None


class TargetUnverifiedError(SyVaultError):
    """422 ``target_unverified``: the target's admin may not create users or grant what it lists."""

    default_code = "target_unverified"


class ServerError(SyVaultError):
    """5xx: the server could not do the work. Base of the more specific 5xx errors."""

    default_code = "internal"


class TargetUnavailableError(ServerError):
    """502 ``target_unavailable``: the target database cannot be reached or refused the admin
    login. For a revocation, the revocation is recorded and retried by the server."""

    default_code = "target_unavailable"


class ServiceUnavailableError(ServerError):
    """503 ``unavailable``: the server's event store is unavailable; retry shortly."""

    default_code = "unavailable"


class GatewayTimeoutError(ServerError):
    """504 ``timeout``: the work did not finish within the server's deadline.

    Not to be confused with the built-in :class:`TimeoutError` (a local socket timeout is a
    :class:`SyVaultConnectionError`)."""

    default_code = "timeout"


class SyVaultConnectionError(SyVaultError, ConnectionError):
    """The server could not be reached, or the connection failed or timed out before an
    answer arrived (``status`` is ``None``, ``code`` is ``"connection_error"``).

    Also a built-in :class:`ConnectionError`. For a non-idempotent call (creating a lease),
    the server may or may not have done the work."""

    default_code = "connection_error"

    def __init__(self, message: str, status: Optional[int] = None, code: Optional[str] = None) -> None:
        SyVaultError.__init__(self, message, status, code)

    def __str__(self) -> str:
        return SyVaultError.__str__(self)


_BY_CODE: Dict[str, Type[SyVaultError]] = {
    "invalid_request": InvalidRequestError,
    "invalid_ttl": InvalidTTLError,
    "too_large": PayloadTooLargeError,
    "unauthenticated": AuthenticationError,
    "forbidden": PermissionDeniedError,
    "not_found": NotFoundError,
    "conflict": ConflictError,
    "precondition_failed": PreconditionFailedError,
    "too_many_leases": TooManyLeasesError,
    "rate_limited": RateLimitedError,
    "target_unverified": TargetUnverifiedError,
    "target_unavailable": TargetUnavailableError,
    "unavailable": ServiceUnavailableError,
    "timeout": GatewayTimeoutError,
}

_BY_STATUS: Dict[int, Type[SyVaultError]] = {
    400: InvalidRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    412: PreconditionFailedError,
    413: PayloadTooLargeError,
    422: TargetUnverifiedError,
    502: TargetUnavailableError,
    503: ServiceUnavailableError,
    504: GatewayTimeoutError,
}


def error_from_response(status: int, code: Optional[str], message: Optional[str]) -> SyVaultError:
    """Build the exception for an error answer: by its code when known, else by its status."""
    cls = _BY_CODE.get(code or "")
    by_status = _BY_STATUS.get(status)
    # The code picks the most specific class, but never one outside the status' family,
    # so that catching by status (e.g. NotFoundError for any 404) always works.
    if cls is None or (by_status is not None and not issubclass(cls, by_status)):
        cls = by_status
    if cls is None:
        cls = ServerError if status >= 500 else SyVaultError
    if not code:
        code = "http_error"
    return cls(message or ("HTTP status %d" % status), status=status, code=code)

