"""The objects the SDK returns: leases, lease pages and targets.

Times stay the RFC 3339 strings the server sends (``"2026-04-06T13:00:00Z"``); each has a
``*_datetime`` property returning a timezone-aware :class:`datetime.datetime`.
"""

import re
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, Iterator, List, Mapping, Optional
from urllib.parse import urlsplit, urlunsplit

__all__ = ["Lease", "LeaseInfo", "LeasePage", "Target", "parse_time"]

_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?([Zz]|[+-]\d{2}:\d{2})$"
)


def parse_time(value: Optional[str]) -> Optional[datetime]:
    """Parse an RFC 3339 timestamp (``Z`` or an offset, any fraction digits) into an aware
    datetime; ``None`` stays ``None``. Fractions beyond microseconds are truncated."""
    if value is None or value == "":
        return None
    m = _RFC3339.match(value)
    if not m:
        raise ValueError("not an RFC 3339 timestamp: %r" % (value,))
    year, month, day, hour, minute, second, frac, tz = m.groups()
    micro = int((frac or "0")[:6].ljust(6, "0"))
    if tz in ("Z", "z"):
        tzinfo = timezone.utc
    else:
        sign = 1 if tz[0] == "+" else -1
        tzinfo = timezone(sign * timedelta(hours=int(tz[1:3]), minutes=int(tz[4:6])))
    return datetime(int(year), int(month), int(day), int(hour), int(minute), min(int(second), 59), micro, tzinfo)


def _mask_connection_string(cs: str) -> str:
    """The connection string with its password replaced by ``***``."""
    if not cs:
        return cs
    try:
        parts = urlsplit(cs)
        if parts.password is None:
            return cs if "@" not in cs else "***"
        host = parts.netloc.rsplit("@", 1)[1]
        return urlunsplit(parts._replace(netloc="%s:***@%s" % (parts.username or "", host)))
    except ValueError:
        return "***"


class _Model:
    _fields: tuple = ()

    def __init__(self, data: Mapping[str, Any]) -> None:
        for name in self._fields:
            setattr(self, name, data.get(name))
        #: Every field of the server's answer, including ones this SDK version does not know.
        self.raw: Dict[str, Any] = dict(data)

    def to_dict(self) -> Dict[str, Any]:
        """The server's answer as a plain dict (for a :class:`Lease`, with the password)."""
        return dict(self.raw)

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.raw == other.raw  # type: ignore[attr-defined]

    def __ne__(self, other: object) -> bool:
        return not self == other

    __hash__ = None  # type: ignore[assignment]

    def _repr_value(self, name: str) -> Any:
        return getattr(self, name)

    def __repr__(self) -> str:
        shown = ", ".join("%s=%r" % (n, self._repr_value(n)) for n in self._fields if getattr(self, n) is not None)
        return "%s(%s)" % (type(self).__name__, shown)

    __str__ = __repr__


class _Times:
    created_at: Optional[str]
    expires_at: Optional[str]

    @property
    def created_at_datetime(self) -> Optional[datetime]:
        """``created_at`` as an aware datetime (UTC)."""
        return parse_time(self.created_at)

    @property
    def expires_at_datetime(self) -> Optional[datetime]:
        """``expires_at`` as an aware datetime (UTC)."""
        return parse_time(self.expires_at)

    def seconds_left(self, now: Optional[datetime] = None) -> Optional[float]:
        """Seconds until ``expires_at`` (negative once passed), or ``None`` if unknown."""
        exp = self.expires_at_datetime
        if exp is None:
            return None
        return (exp - (now or datetime.now(timezone.utc))).total_seconds()


class Lease(_Times, _Model):
    """The credentials of a new lease, as :meth:`DynamicSecrets.create_lease` returns them.

    Attributes:
        lease_id: the lease's id (a UUID); pass it to ``revoke_lease``/``renew_lease``.
        username: the temporary database user (``vf_tmp_`` and 8 characters).
        password: its password. Never shown by ``repr()``.
        connection_string: a ``postgresql://`` or ``mysql://`` URI with the password
            percent-encoded, for ``psycopg2.connect()`` and similar. Masked in ``repr()``.
        expires_at: RFC 3339 UTC string; see ``expires_at_datetime``.
        record_uid, created_at, engine, host, port, database: the target and the lease's start.
    """

    _fields = (
        "lease_id", "username", "password", "connection_string", "expires_at",
        "record_uid", "created_at", "engine", "host", "port", "database",
    )

    lease_id: str
    username: str
    password: str
    connection_string: str
    expires_at: str
    record_uid: Optional[str]
    created_at: Optional[str]
    engine: Optional[str]
    host: Optional[str]
    port: Optional[int]
    database: Optional[str]

    def _repr_value(self, name: str) -> Any:
        if name == "password":
            return "***"
        if name == "connection_string":
            return _mask_connection_string(self.connection_string)
        return getattr(self, name)


class LeaseInfo(_Times, _Model):
    """A lease as listing, getting and renewing show it (no password).

    Attributes:
        lease_id, record_uid, username, created_at, expires_at: as for :class:`Lease`.
        status: ``pending``, ``active``, ``revoking``, ``revoked``, ``expired`` or ``failed``
            (``None`` when the server omits it).
        ended_at: RFC 3339 time the lease ended, or ``None``; see ``ended_at_datetime``.
        client_id: the client that requested it. ttl_seconds: the TTL it was requested with.
    """

    _fields = ("lease_id", "record_uid", "username", "status", "created_at", "expires_at",
               "ended_at", "client_id", "ttl_seconds")

    lease_id: str
    record_uid: str
    username: str
    status: Optional[str]
    created_at: str
    expires_at: str
    ended_at: Optional[str]
    client_id: Optional[str]
    ttl_seconds: Optional[int]

    @property
    def ended_at_datetime(self) -> Optional[datetime]:
        """``ended_at`` as an aware datetime, or ``None`` while the lease has not ended."""
        return parse_time(self.ended_at)

    @property
    def active(self) -> bool:
        """Whether the lease's credentials are currently usable (status ``active``)."""
        return self.status == "active"


class LeasePage:
    """One page of active leases, oldest first. Iterable; ``next_cursor`` is ``None`` on the
    last page, else pass it as ``cursor=`` to get the next one."""

    def __init__(self, data: List[LeaseInfo], next_cursor: Optional[str]) -> None:
        self.data = data
        self.next_cursor = next_cursor or None

    @property
    def has_more(self) -> bool:
        """Whether another page follows."""
        return self.next_cursor is not None

    def __iter__(self) -> Iterator[LeaseInfo]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> LeaseInfo:
        return self.data[i]

    def __repr__(self) -> str:
        return "LeasePage(data=%r, next_cursor=%r)" % (self.data, self.next_cursor)


class Target(_Model):
    """A dynamic secret target (a database SyVault creates users on). The admin password is
    never returned by the server.

    Attributes:
        record_uid: the 12-character uid leases name (``record_uid=`` of ``create_lease``).
        name, engine (``postgresql``/``mysql``), host, port, database, admin_username,
        tls_mode, grants (list of dicts), max_ttl_seconds, connection_host, connection_port,
        created_at (RFC 3339).
    """

    _fields = ("record_uid", "name", "engine", "host", "port", "database", "admin_username", "tls_mode",
               "grants", "max_ttl_seconds", "connection_host", "connection_port", "created_at")

    record_uid: str
    name: str
    engine: str
    host: str
    port: int
    database: str
    admin_username: str
    tls_mode: Optional[str]
    grants: List[Dict[str, Any]]
    max_ttl_seconds: Optional[int]
    connection_host: Optional[str]
    connection_port: Optional[int]
    created_at: Optional[str]

    @property
    def created_at_datetime(self) -> Optional[datetime]:
        """``created_at`` as an aware datetime (UTC)."""
        return parse_time(self.created_at)
