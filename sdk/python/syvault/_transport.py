"""What the API's parts (leases and targets, clients, audit) need of the client: one
authenticated request. They are typed against this, not against the client that makes them,
so that no module of the SDK imports one that imports it back."""

from typing import Any, Dict, Mapping, Optional, Tuple
from urllib.parse import quote

from .errors import InvalidRequestError, SyVaultError

try:  # Python 3.8+
    from typing import Protocol
except ImportError:  # pragma: no cover
    Protocol = object  # type: ignore[assignment,misc]

__all__ = ["Requester"]


class Requester(Protocol):
    """Sends an authenticated API request and returns the decoded JSON answer (``None`` for
    204), or with ``exchange`` the answer's headers too; :class:`syvault.SecretsManagerClient`
    is one."""

    def request(
        self,
        method: str,
        path: str,
        json_body: Any = None,
        query: Optional[Mapping[str, Any]] = None,
    ) -> Any: ...

    def exchange(
        self,
        method: str,
        path: str,
        json_body: Any = None,
        query: Optional[Mapping[str, Any]] = None,
        headers: Optional[Mapping[str, str]] = None,
    ) -> Tuple[Any, Mapping[str, str]]: ...


def _id(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidRequestError("%s must be a non-empty string." % name, code="invalid_request")
    return quote(value, safe="")


def _object(body: Any, what: str) -> Dict[str, Any]:
    if not isinstance(body, dict):
        raise SyVaultError("The server answered %s with something other than a JSON object." % what, code="invalid_response")
    return body


def _etag_headers(etag: Optional[str]) -> Optional[Dict[str, str]]:
    """The headers that make an update conditional on version ``etag`` (none without one)."""
    return {"If-Match": etag} if etag else None
