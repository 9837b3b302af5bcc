"""Dynamic secrets: leases of temporary database users, and the targets they are made on."""

from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional

from .errors import InvalidRequestError, SyVaultError
from ._transport import Requester, _etag_headers, _id, _object
from .keeper import LeaseKeeper
from .models import Lease, LeaseInfo, LeasePage, Target

__all__ = ["DynamicSecrets"]

_BASE = "/api/sm/v1/dynamic"


class DynamicSecrets:
    """``client.dynamic``: leases (any client) and targets (admin clients).

    Leases: :meth:`create_lease`, :meth:`get_lease`, :meth:`list_leases`,
    :meth:`iter_leases`, :meth:`renew_lease`, :meth:`revoke_lease`, and
    :meth:`keep_fresh` for a long-running application.
    Targets: :meth:`create_target`, :meth:`list_targets`, :meth:`get_target`,
    :meth:`update_target`, :meth:`delete_target`.
    """

    def __init__(self, client: Requester) -> None:
        self._client = client

    # Leases -----------------------------------------------------------------------------

    def create_lease(self, record_uid: str, ttl_seconds: int) -> Lease:
        """Create a temporary database user on the target ``record_uid`` for ``ttl_seconds``
        (1 to 86400, and at most the target's and this client's maximum).

        Returns once the user exists with its grants, so the credentials work at once.

        Returns:
            Lease: ``lease_id``, ``username``, ``password``, ``connection_string``,
            ``expires_at`` (RFC 3339 string; ``expires_at_datetime`` for a datetime), plus
            ``record_uid``, ``created_at``, ``engine``, ``host``, ``port``, ``database``.

        Raises:
            InvalidTTLError: ``ttl_seconds`` out of range (code ``invalid_ttl``).
            NotFoundError: unknown ``record_uid``.
            PermissionDeniedError: this client may not lease that record.
            TooManyLeasesError: this client holds its ``max_leases``; nothing was created.
            TargetUnavailableError: the database could not be reached; nothing was created.
            GatewayTimeoutError: not done within the server's deadline; nothing was left behind.
        """
        body = self._client.request("POST", _BASE + "/lease", {"record_uid": record_uid, "ttl_seconds": ttl_seconds})
        return Lease(_object(body, "the lease request"))

    def get_lease(self, lease_id: str) -> LeaseInfo:
        """One lease, ended or not, with its ``status`` (``pending``, ``active``,
        ``revoking``, ``revoked``, ``expired``, ``failed``) and ``ended_at``.

        Raises:
            NotFoundError: unknown lease (or another client's, for an app client).
        """
        body = self._client.request("GET", _BASE + "/leases/" + _id("lease_id", lease_id))
        return LeaseInfo(_object(body, "the lease query"))

    def list_leases(
        self,
        record_uid: Optional[str] = None,
        limit: Optional[int] = None,
        cursor: Optional[str] = None,
    ) -> LeasePage:
        """One page of active leases, oldest first (an admin sees all, an app client its own).

        Args:
            record_uid: only the leases of this target.
            limit: page size, 1 to 1000 (server default 100).
            cursor: ``next_cursor`` of the previous page.

        Returns:
            LeasePage: iterable of :class:`LeaseInfo`; ``next_cursor`` is ``None`` on the
            last page. See :meth:`iter_leases` to walk every page.
        """
        body = _object(
            self._client.request(
                "GET", _BASE + "/leases", query={"record_uid": record_uid or None, "limit": limit, "cursor": cursor or None}
            ),
            "the lease list",
        )
        data = body.get("data") or []
        if not isinstance(data, list):
            raise SyVaultError("The lease list's data is not a list.", code="invalid_response")
        return LeasePage([LeaseInfo(d) for d in data if isinstance(d, dict)], body.get("next_cursor"))

    def iter_leases(self, record_uid: Optional[str] = None, page_size: Optional[int] = None) -> Iterator[LeaseInfo]:
        """Every active lease, oldest first, fetching pages of ``page_size`` as it goes."""
        cursor: Optional[str] = None
        while True:
            page = self.list_leases(record_uid=record_uid, limit=page_size, cursor=cursor)
            for lease in page.data:
                yield lease
            if not page.next_cursor or page.next_cursor == cursor:
                return
            cursor = page.next_cursor

    def renew_lease(self, lease_id: str, ttl_seconds: int) -> LeaseInfo:
        """Extend an active lease to now + ``ttl_seconds``; never beyond its ``created_at``
        + 24 h, nor the target's or client's maximum. Returns once the database holds the
        new expiry (PostgreSQL's ``VALID UNTIL``).

        Returns:
            LeaseInfo: the lease with its new ``expires_at``.

        Raises:
            InvalidTTLError: ``ttl_seconds`` out of range.
            NotFoundError: unknown or ended lease.
            ConflictError: the lease is not active (e.g. still pending or being revoked).
            TargetUnavailableError, GatewayTimeoutError: the database did not take the new
                expiry in time; the renewal is recorded and retried until it does.
        """
        body = self._client.request(
            "POST", _BASE + "/leases/" + _id("lease_id", lease_id) + "/renew", {"ttl_seconds": ttl_seconds}
        )
        return LeaseInfo(_object(body, "the renewal"))

    def revoke_lease(self, lease_id: str, force: bool = False) -> Optional[LeaseInfo]:
        """Revoke a lease now: returns once the user's sessions are terminated and the user is
        dropped, so the credentials can open no session any more.

        ``force=True`` (admin only) is for a database gone for good: the server makes one
        drop attempt of its own, there and then, and if it fails gives the drop up. The
        lease then ends (``status`` ``revoked``, or ``expired`` when its expiry was being
        revoked) with ``abandoned`` true and is no longer retried; its user may remain on
        the database (a PostgreSQL one cannot log in past its expiry) until
        ``syvault reconcile --apply`` (or ``--reconcile-interval``) drops it once the
        database is back, while the target is registered.

        Returns:
            None; with ``force``, the lease as it ended (:class:`LeaseInfo`).

        Raises:
            NotFoundError: unknown or already ended lease.
            ForbiddenError: ``force`` by an app client.
            TargetUnavailableError, GatewayTimeoutError: the database could not be reached in
                time. The revocation is recorded all the same (status ``revoking``) and the
                server retries it until the user is gone.
        """
        path = _BASE + "/leases/" + _id("lease_id", lease_id)
        if not force:
            self._client.request("DELETE", path)
            return None
        body = self._client.request("DELETE", path, query={"force": True})
        return LeaseInfo(_object(body, "the forced revocation"))

    def keep_fresh(
        self,
        record_uid: str,
        ttl_seconds: int,
        on_rotate: Optional[Callable[[Lease], None]] = None,
        grace_seconds: Optional[float] = None,
        on_error: Optional[Callable[[SyVaultError], None]] = None,
        revoke_on_close: bool = True,
    ) -> LeaseKeeper:
        """Create a lease and keep its credentials fresh in a background thread, as
        ``sy agent`` does: renew it at about two thirds of its remaining time; when a
        renewal comes back short (the lease is at its cap: 24 h from ``created_at``, or the
        target's or client's ``max_ttl_seconds``), create a new lease, call
        ``on_rotate(new_lease)``, and revoke the old one ``grace_seconds`` later.

        Failures are retried with backoff while the credentials held are valid. Once they
        have expired (or the lease was revoked elsewhere) and no new lease can be had, the
        keeper stops: ``on_error(error)`` is called and ``keeper.lease`` raises.

        Example::

            with client.dynamic.keep_fresh(record_uid="7Kj9mNpQ2xRs", ttl_seconds=3600,
                                           on_rotate=pool.replace, grace_seconds=60) as fresh:
                pool.replace(fresh.lease)
                serve()

        Args:
            on_rotate: called on the keeper's thread with the new :class:`Lease`; the old
                lease stays valid for ``grace_seconds`` after it returns, time to move the
                connections over.
            grace_seconds: default 30, or a tenth of ``ttl_seconds`` if shorter; must be
                shorter than a third of ``ttl_seconds``.
            on_error: called on the keeper's thread when it gives up.
            revoke_on_close: whether :meth:`LeaseKeeper.close` (and leaving the ``with``
                block) revokes the current lease; replaced ones are revoked either way.

        Returns:
            LeaseKeeper: ``lease`` is the current :class:`Lease`; a context manager.

        Raises:
            ConfigurationError: ``ttl_seconds`` or ``grace_seconds`` out of range.
            SyVaultError: as :meth:`create_lease`, for the first lease.
        """
        return LeaseKeeper(self, record_uid, ttl_seconds, on_rotate=on_rotate, grace_seconds=grace_seconds,
                           on_error=on_error, revoke_on_close=revoke_on_close)

    # Targets (admin) --------------------------------------------------------------------

    def create_target(self, target: Optional[Mapping[str, Any]] = None, **fields: Any) -> Target:
        """Register a target (admin only). Pass the fields as keyword arguments and/or a
        mapping: ``name``, ``engine`` (``postgresql``/``mysql``), ``host``, ``port``,
        ``database``, ``admin_username``, ``admin_password``, ``tls_mode``
        (``disable``/``require``/``verify-full``), ``grants`` (list of
        ``{"database", "schema", "tables", "privileges"}``), optionally ``max_ttl_seconds``,
        ``connection_host``, ``connection_port``, ``connection_limit`` (most sessions each
        lease user may hold at once; absent: no limit).

        The server first checks that the admin may create users and grant the privileges.

        Returns:
            Target: with its ``record_uid`` and ``created_at`` (never the admin password),
            and its ``warnings``: what the database lets a lease user do beyond the grants
            (the target is registered all the same).

        Raises:
            InvalidRequestError: a missing or invalid field.
            TargetUnverifiedError: the admin may not create users or grant what is listed.
            TargetUnavailableError: the database could not be reached or refused the login.
            PermissionDeniedError: not an admin client.
        """
        body: Dict[str, Any] = dict(target or {})
        body.update(fields)
        return Target(_object(self._client.request("POST", _BASE + "/targets", body), "the target registration"))

    def list_targets(self) -> List[Target]:
        """Every target (admin only)."""
        body = _object(self._client.request("GET", _BASE + "/targets"), "the target list")
        return [Target(d) for d in (body.get("data") or []) if isinstance(d, dict)]

    def get_target(self, record_uid: str) -> Target:
        """One target (admin only). Raises :class:`NotFoundError` for an unknown uid."""
        answer, headers = self._client.exchange("GET", _BASE + "/targets/" + _id("record_uid", record_uid))
        target = Target(_object(answer, "the target query"))
        target.etag = headers.get("ETag")
        return target

    def update_target(
        self, record_uid: str, target: Optional[Mapping[str, Any]] = None, *, if_match: Optional[str] = None, **fields: Any
    ) -> Target:
        """Replace a target's settings (admin only), e.g. to rotate its admin password.

        The body is the *full* target, as for :meth:`create_target` (``admin_password``
        included: the server never returns it, so it cannot be kept by omission); a field
        left out takes its default, it does not keep its old value. ``engine`` cannot
        change. The server verifies the new settings as for a new target. Leases issued
        before are revoked with the new admin credentials and, once it returns without
        error, hold the new grants (on MySQL a :class:`TargetUnavailableError` raised after
        the update was recorded says some do not yet: send the update again).

        ``if_match`` (a :class:`Target`'s ``etag``) makes the update only while the target
        is still at that version, so an edit made from a read never undoes a change another
        admin made since (:class:`PreconditionFailedError` otherwise; nothing changes).

        Example — rotate the admin password, keeping everything else::

            cur = client.dynamic.get_target(uid)
            t = cur.to_dict()
            for k in ("record_uid", "created_at"):
                t.pop(k, None)
            client.dynamic.update_target(uid, t, admin_password=new_password, if_match=cur.etag)

        Returns:
            Target: the updated target.

        Raises:
            InvalidRequestError: a missing or invalid field, or a changed ``engine``.
            NotFoundError: unknown uid.
            ConflictError: another target bears the new name, or (without
                ``if_match``) another server process changed the target while this
                update was verified: send it again.
            PreconditionFailedError: ``if_match`` is no longer the target's version.
            GatewayTimeoutError: the server's request timeout passed, waiting for another
                change of the target it was making (nothing changed), or for the update's
                record to be read back (read the target before sending it again).
            TargetUnverifiedError, TargetUnavailableError: as for :meth:`create_target`.
            PermissionDeniedError: not an admin client.
        """
        body: Dict[str, Any] = dict(target or {})
        body.update(fields)
        path = _BASE + "/targets/" + _id("record_uid", record_uid)
        answer, headers = self._client.exchange("PUT", path, body, headers=_etag_headers(if_match))
        updated = Target(_object(answer, "the target update"))
        updated.etag = headers.get("ETag")
        return updated

    def delete_target(self, record_uid: str, revoke_leases: bool = False, force: bool = False) -> None:
        """Remove a target (admin only). With ``revoke_leases`` and ``force``, for a target
        whose database is gone for good, a revocation that cannot finish is given up (see
        :meth:`revoke_lease`) and the target removed: those leases' users may remain on the
        database.

        Raises:
            ConflictError: it still has active leases and ``revoke_leases`` is false,
                or other servers kept changing it while it was removed: send it again.
            NotFoundError: unknown uid.
            GatewayTimeoutError: the server's request timeout passed, waiting for another
                change of the target it was making (nothing removed), for a revocation, or
                for the removal's record to be read back, or checking it for leases
                activated meanwhile (the removal stands, and SyVault revokes any such
                lease once its read side has caught up: sent again, it raises
                NotFoundError).
            TargetUnavailableError: with ``revoke_leases``, a revocation could not reach
                the database (it stays recorded and retried; nothing was removed).

        A lease activated while the removal was under way is revoked with the target,
        whatever ``revoke_leases`` says: its target is gone.
        """
        self._client.request(
            "DELETE",
            _BASE + "/targets/" + _id("record_uid", record_uid),
            query={"revoke_leases": True if revoke_leases else None, "force": True if force else None},
        )
