"""The objects the SDK returns: leases, targets, clients, audit events and their pages.

Times stay the RFC 3339 strings the server sends (``"2026-04-06T13:00:00Z"``); each has a
``*_datetime`` property returning a timezone-aware :class:`datetime.datetime`.
"""

import re
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, Iterator, List, Mapping, Optional
from urllib.parse import urlsplit, urlunsplit

__all__ = ["Lease", "LeaseInfo", "LeasePage", "Target", "ClientInfo", "AuditEvent", "AuditPage", "parse_time"]

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
        abandoned: ``True`` once an admin gave up dropping its user (a forced revocation):
            the user may remain on the database; else ``None``.
    """

    _fields = ("lease_id", "record_uid", "username", "status", "created_at", "expires_at",
               "ended_at", "client_id", "ttl_seconds", "abandoned")

    lease_id: str
    record_uid: str
    username: str
    status: Optional[str]
    created_at: str
    expires_at: str
    ended_at: Optional[str]
    client_id: Optional[str]
    ttl_seconds: Optional[int]
    abandoned: Optional[bool]

    @property
    def ended_at_datetime(self) -> Optional[datetime]:
        """``ended_at`` as an aware datetime, or ``None`` while the lease has not ended."""
        return parse_time(self.ended_at)

    @property
    def active(self) -> bool:
        """Whether the lease's credentials are currently usable (status ``active``)."""
        return self.status == "active"


class _Page:
    """One page of a listing: iterable, with ``next_cursor`` (``None`` on the last page)."""

    def __init__(self, data: List[Any], next_cursor: Optional[str]) -> None:
        self.data = data
        self.next_cursor = next_cursor or None

    @property
    def has_more(self) -> bool:
        """Whether another page follows."""
        return self.next_cursor is not None

    def __iter__(self) -> Iterator[Any]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> Any:
        return self.data[i]

    def __repr__(self) -> str:
        return "%s(data=%r, next_cursor=%r)" % (type(self).__name__, self.data, self.next_cursor)


class LeasePage(_Page):
    """One page of active leases, oldest first. Iterable; ``next_cursor`` is ``None`` on the
    last page, else pass it as ``cursor=`` to get the next one."""

    data: List[LeaseInfo]

    def __iter__(self) -> Iterator[LeaseInfo]:
        return iter(self.data)

    def __getitem__(self, i: int) -> LeaseInfo:
        return self.data[i]


class Target(_Model):
    """A dynamic secret target (a database SyVault creates users on). The admin password is
    never returned by the server.

    Attributes:
        record_uid: the 12-character uid leases name (``record_uid=`` of ``create_lease``).
        name, engine (``postgresql``/``mysql``), host, port, database, admin_username,
        tls_mode, grants (list of dicts), max_ttl_seconds, connection_host, connection_port,
        connection_limit (sessions per lease user, ``None`` for no limit), created_at (RFC 3339).
        warnings: only from ``create_target`` and ``update_target``, what the database lets a
            lease user do beyond the grants (e.g. create in a schema every role may create
            in), each with the statement that takes it away; else ``None``.
        etag: its version, when the answer named one (``get_target``, ``update_target``).
    """

    _fields = ("record_uid", "name", "engine", "host", "port", "database", "admin_username", "tls_mode",
               "grants", "max_ttl_seconds", "connection_host", "connection_port", "connection_limit",
               "created_at", "warnings")

    #: The target's version (an ETag) as ``get_target`` and ``update_target`` answered it,
    #: else ``None``: pass it as ``update_target(..., if_match=)``.
    etag: Optional[str] = None

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
    connection_limit: Optional[int]
    created_at: Optional[str]
    warnings: Optional[List[str]]

    @property
    def created_at_datetime(self) -> Optional[datetime]:
        """``created_at`` as an aware datetime (UTC)."""
        return parse_time(self.created_at)


class ClientInfo(_Model):
    """A registered client (an application or an operator), as ``client.clients`` shows it.
    Not to be confused with :class:`~syvault.SecretsManagerClient`, which *is* a client.

    Attributes:
        client_id: the client's id (a UUID): the ``client_id=`` of a SecretsManagerClient.
        name: a human label.
        role: ``"admin"`` (everything) or ``"app"`` (leases on ``allowed_records`` only).
        allowed_records: record uids an app client may lease (a list, possibly empty).
        max_ttl_seconds: cap on the client's lease TTLs, or ``None`` when it has none of its own.
        max_leases: cap on the leases it holds at once, or ``None`` when it has none.
        public_key: its Ed25519 public key, PKIX PEM (the server never holds the private key).
        created_at: RFC 3339 UTC string; see ``created_at_datetime``.
        etag: its version, when the answer named one (``get``, ``update``).
    """

    _fields = ("client_id", "name", "role", "allowed_records", "max_ttl_seconds", "max_leases", "public_key", "created_at")

    #: The client's version (an ETag) as ``get`` and ``update`` answered it, else ``None``.
    etag: Optional[str] = None

    client_id: str
    name: str
    role: str
    allowed_records: List[str]
    max_ttl_seconds: Optional[int]
    max_leases: Optional[int]
    public_key: str
    created_at: str

    def __init__(self, data: Mapping[str, Any]) -> None:
        _Model.__init__(self, data)
        if self.allowed_records is None:
            self.allowed_records = []

    @property
    def is_admin(self) -> bool:
        """Whether the client has the ``admin`` role."""
        return self.role == "admin"

    @property
    def created_at_datetime(self) -> Optional[datetime]:
        """``created_at`` as an aware datetime (UTC)."""
        return parse_time(self.created_at)

    def _repr_value(self, name: str) -> Any:
        if name == "public_key" and self.public_key:
            return "<PEM>"  # public, but long
        return getattr(self, name)


class AuditEvent(_Model):
    """One event of the audit trail. It never carries a secret. Fields an event type does
    not use are ``None``.

    Attributes:
        seq: the event's sequence number in the stream (increasing).
        time: RFC 3339 UTC string; see ``time_datetime``.
        type: e.g. ``target.registered``, ``target.updated``, ``target.resealed``,
            ``target.removed``, ``client.registered``, ``client.removed``, ``lease.requested``,
            ``lease.activated``, ``lease.failed``, ``lease.renewed``, ``lease.revoked``,
            ``lease.expired``, ``lease.dropped``, ``access.denied``, ``token_key.rotated``,
            ``token_keys.resealed``.
        client_id: the acting client.
        record_uid, lease_id, ttl_seconds, expires_at, username: what the event is about.
        outcome: ``ok`` or an error code (for ``access.denied``, e.g. ``forbidden``).
        reason: a human explanation, when there is one.
        action: for ``access.denied``, the refused action (e.g. ``lease.create``).
        subject_client_id: for client events, the client the event is about.
    """

    _fields = ("seq", "time", "type", "client_id", "record_uid", "lease_id", "ttl_seconds", "expires_at",
               "username", "outcome", "reason", "action", "subject_client_id")

    seq: int
    time: str
    type: str
    client_id: Optional[str]
    record_uid: Optional[str]
    lease_id: Optional[str]
    ttl_seconds: Optional[int]
    expires_at: Optional[str]
    username: Optional[str]
    outcome: Optional[str]
    reason: Optional[str]
    action: Optional[str]
    subject_client_id: Optional[str]

    @property
    def time_datetime(self) -> Optional[datetime]:
        """``time`` as an aware datetime (UTC)."""
        return parse_time(self.time)

    @property
    def expires_at_datetime(self) -> Optional[datetime]:
        """``expires_at`` as an aware datetime (UTC), or ``None``."""
        return parse_time(self.expires_at)


class AuditPage(_Page):
    """One page of audit events, oldest first (``seq`` increasing). Iterable;
    ``next_cursor`` is ``None`` once the end of the trail was reached, else pass it as
    ``cursor=`` to continue."""

    data: List[AuditEvent]

    def __iter__(self) -> Iterator[AuditEvent]:
        return iter(self.data)

    def __getitem__(self, i: int) -> AuditEvent:
        return self.data[i]
