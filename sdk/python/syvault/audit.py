"""The audit trail (admin): every lease, target, client and refused-request event."""

from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Dict, Iterator, Optional, Union

from ._transport import Requester, _object
from .errors import InvalidRequestError, SyVaultError
from .models import AuditEvent, AuditPage, parse_time

__all__ = ["Audit", "format_time"]

_PATH = "/api/sm/v1/audit"

TimeLike = Union[datetime, str, timedelta]


def format_time(value: Optional[TimeLike], name: str = "time", now: Optional[Callable[[], datetime]] = None) -> Optional[str]:
    """The RFC 3339 string the server expects for ``since``/``until``; ``None`` stays
    ``None``. Datetimes and timedeltas give UTC with a ``Z`` (``2026-04-06T12:00:00Z``, with
    microseconds when there are any).

    Python datetimes hold microseconds, the server's event times nanoseconds: to use an
    event's time as a bound, pass its ``time`` string rather than ``time_datetime``.

    Accepts:
        * an aware :class:`~datetime.datetime` (any zone; converted to UTC);
        * a naive datetime, taken as UTC (as ``datetime.utcnow()`` gives);
        * an RFC 3339 string (``Z`` or an offset), sent as it is, nanoseconds included;
        * a :class:`~datetime.timedelta` ``d`` (not negative): "``d`` ago", i.e. now - ``d``
          by this machine's clock.

    Raises:
        InvalidRequestError: a string that is not RFC 3339, or a negative timedelta.
        TypeError: any other type (e.g. a number or a :class:`~datetime.date`).
    """
    if value is None:
        return None
    if isinstance(value, timedelta):
        if value < timedelta(0):
            raise InvalidRequestError("%s as a timedelta means that long ago; it cannot be negative." % name)
        value = (now or (lambda: datetime.now(timezone.utc)))() - value
    elif isinstance(value, str):
        text = value.strip()
        try:
            parsed = parse_time(text)
        except ValueError:
            parsed = None
        if parsed is None:
            raise InvalidRequestError("%s must be an RFC 3339 time, e.g. 2026-04-06T12:00:00Z; got %r." % (name, value))
        # Sent as given (only "t"/" " and "z" upper-cased), so that nanoseconds survive: an
        # event's own ``time`` string, passed back as ``until``, still includes that event.
        text = text[:10] + "T" + text[11:]
        return text[:-1] + "Z" if text.endswith("z") else text
    elif not isinstance(value, datetime):  # (a datetime is also a date; a bare date is not accepted)
        raise TypeError("%s must be a datetime, an RFC 3339 string or a timedelta, not %s." % (name, type(value).__name__))
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        value = value.replace(tzinfo=timezone.utc)
    value = value.astimezone(timezone.utc)
    text = value.strftime("%Y-%m-%dT%H:%M:%S")
    if value.microsecond:
        text += ".%06d" % value.microsecond
    return text + "Z"


class Audit:
    """``client.audit``: replay the audit trail, oldest first (admin clients only).

    Example — what happened in the last hour on one target::

        for event in client.audit.iter(since=timedelta(hours=1), record_uid="7Kj9mNpQ2xRs"):
            print(event.seq, event.time, event.type, event.client_id, event.outcome)
    """

    def __init__(self, client: Requester) -> None:
        self._client = client

    def list(
        self,
        since: Optional[TimeLike] = None,
        until: Optional[TimeLike] = None,
        record_uid: Optional[str] = None,
        lease_id: Optional[str] = None,
        client_id: Optional[str] = None,
        limit: Optional[int] = None,
        cursor: Optional[str] = None,
    ) -> AuditPage:
        """One page of audit events, oldest first (admin only).

        Args:
            since: only events at or after this time (see :func:`format_time`: a datetime,
                an RFC 3339 string, or a timedelta meaning "that long ago").
            until: only events at or before this time (same forms).
            record_uid: only the events of this target.
            lease_id: only the events of this lease.
            client_id: only the events by or about this client (its requests, refusals,
                registration and removal).
            limit: page size, 1 to 1000 (server default 100). A page may hold fewer
                events and still have a ``next_cursor``: the server bounds how far one
                request scans.
            cursor: ``next_cursor`` of the previous page (events after that point).

        Returns:
            AuditPage: iterable of :class:`AuditEvent`; ``next_cursor`` is ``None`` once
            the end was reached. See :meth:`iter` to follow every page.

        Raises:
            PermissionDeniedError: not an admin client.
            InvalidRequestError: a bad time, limit or cursor.
        """
        query: Dict[str, Any] = {
            "since": format_time(since, "since"),
            "until": format_time(until, "until"),
            "record_uid": record_uid or None,
            "lease_id": lease_id or None,
            "client_id": client_id or None,
            "limit": limit,
            "cursor": cursor or None,
        }
        body = _object(self._client.request("GET", _PATH, query=query), "the audit query")
        data = body.get("data") or []
        if not isinstance(data, list):
            raise SyVaultError("The audit answer's data is not a list.", code="invalid_response")
        next_cursor = body.get("next_cursor")
        return AuditPage([AuditEvent(d) for d in data if isinstance(d, dict)], str(next_cursor) if next_cursor else None)

    def iter(
        self,
        since: Optional[TimeLike] = None,
        until: Optional[TimeLike] = None,
        record_uid: Optional[str] = None,
        lease_id: Optional[str] = None,
        client_id: Optional[str] = None,
        limit: Optional[int] = None,
        cursor: Optional[str] = None,
    ) -> Iterator[AuditEvent]:
        """Every matching event, oldest first, fetching pages (of ``limit``) as it goes;
        the arguments are those of :meth:`list`. A timedelta ``since``/``until`` is
        resolved once, when iteration starts, so the window does not slide between pages.
        Ends at the end of the trail as it was when each page was read (it does not wait
        for new events)."""
        since_s, until_s = format_time(since, "since"), format_time(until, "until")  # checked now, not at first next()
        return self._pages(since_s, until_s, record_uid, lease_id, client_id, limit, cursor)

    def _pages(self, since: Optional[str], until: Optional[str], record_uid: Optional[str], lease_id: Optional[str],
               client_id: Optional[str], limit: Optional[int], cursor: Optional[str]) -> Iterator[AuditEvent]:
        while True:
            page = self.list(since=since, until=until, record_uid=record_uid, lease_id=lease_id,
                             client_id=client_id, limit=limit, cursor=cursor)
            for event in page.data:
                yield event
            if not page.next_cursor or page.next_cursor == cursor:
                return
            cursor = page.next_cursor
