"""Credentials that stay fresh for a long-running application: what ``sy agent`` does, for
an application that embeds the SDK.

    with client.dynamic.keep_fresh(record_uid="7Kj9mNpQ2xRs", ttl_seconds=3600,
                                   on_rotate=pool.replace, grace_seconds=60) as fresh:
        pool.replace(fresh.lease)
        serve()

A :class:`LeaseKeeper` renews its lease at about two thirds of the remaining time. When a
renewal comes back short (the server holds ``expires_at`` at the lease's cap: 24 h from
``created_at``, or the target's or client's ``max_ttl_seconds``), it creates a new lease,
calls ``on_rotate(new_lease)``, and revokes the old lease ``grace_seconds`` later. It
retries failures with backoff while the credentials it holds are valid, and fails (calls
``on_error``, ``lease`` raises) once they have expired and no new lease can be had.
Closing it revokes its lease.
"""

import logging
import random
import threading
import time
from datetime import datetime, timezone
from typing import Callable, List, Optional

from .errors import (
    ConfigurationError,
    ConflictError,
    GatewayTimeoutError,
    NotFoundError,
    RateLimitedError,
    SyVaultError,
    TargetUnavailableError,
)
from .models import Lease, LeaseInfo

try:  # Python 3.8+
    from typing import Protocol
except ImportError:  # pragma: no cover
    Protocol = object  # type: ignore[assignment,misc]


class LeaseSource(Protocol):
    """What a keeper asks of the API (``client.dynamic`` is one): it is typed against this,
    not against the class that makes keepers, so neither module imports the other back."""

    def create_lease(self, record_uid: str, ttl_seconds: int) -> Lease: ...

    def renew_lease(self, lease_id: str, ttl_seconds: int) -> LeaseInfo: ...

    def revoke_lease(self, lease_id: str) -> None: ...

__all__ = ["LeaseKeeper", "renewal_delay", "renewal_capped", "retry_delay"]

log = logging.getLogger("syvault")

# The schedule, as sy agent keeps it (cmd/sy/cli/agent_schedule.go). Seconds throughout.
RETRY_FIRST = 0.5
RETRY_MAX = 30.0
RETRY_MIN = 0.25
SERVER_TIME_RESOLUTION = 1.0  # expires_at is whole seconds


def renewal_delay(left: float, jitter: float) -> float:
    """Seconds to wait before renewing a lease with ``left`` seconds to live: two thirds
    of it, less up to a tenth at random (``jitter`` in [0, 1)), so that many clients
    started together do not renew together. The last third is what a rotation starts
    with when the renewal shows the cap."""
    if left <= 0:
        return 0.0
    return left * (2.0 / 3 - jitter / 10)


def renewal_capped(before: datetime, after: datetime, elapsed: float) -> bool:
    """Whether a renewal came back short: ``expires_at`` moved from ``before`` to ``after``
    by less than ``elapsed`` (seconds between the previous answer about the lease and
    this request) less the second the server truncates to. The lease is then at its cap
    and no later renewal moves it further. Only the server's times and local durations
    are compared, so a local clock off from the server's changes nothing."""
    return (after - before).total_seconds() <= elapsed - SERVER_TIME_RESOLUTION


def retry_delay(failures: int, left: float, jitter: float) -> float:
    """Seconds before the next attempt after ``failures`` failed ones in a row: 0.5 doubling
    to 30, give or take a fifth (``jitter`` in [0, 1)); while credentials are held that
    expire in ``left`` seconds, at most half of that (at least a quarter second, never
    past the expiry). ``left <= 0``: none held."""
    d = RETRY_FIRST
    for _ in range(1, failures):
        if d >= RETRY_MAX:
            break
        d *= 2
    d = min(d, RETRY_MAX) * (0.8 + 0.4 * jitter)
    if left > 0:
        d = min(d, max(left / 2, RETRY_MIN), left)
    return d


class _Held:
    """A lease the keeper holds and what it knows about it (times from time.monotonic)."""

    def __init__(self, lease: Lease, answered: float) -> None:
        self.lease = lease
        self.answered = answered  # when the last answer about it (create, renewal) came
        self.next = answered  # when to act on it next: renew, replace, or revoke if retiring
        self.failures = 0
        self.replace = False  # renewing is of no more use: at its cap, or ended
        self.ended = False  # the server said it has ended

    @property
    def expires(self) -> datetime:
        return self.lease.expires_at_datetime  # type: ignore[return-value]

    def left(self) -> float:
        return (self.expires - datetime.now(timezone.utc)).total_seconds()

    def usable(self) -> bool:
        return not self.ended and self.left() > 0


class LeaseKeeper:
    """A lease kept fresh by a background thread; see :meth:`DynamicSecrets.keep_fresh`.

    Use it as a context manager, or call :meth:`close`. Thread-safe: :attr:`lease` may be
    read from any thread. Callbacks run on the keeper's thread.
    """

    def __init__(
        self,
        dynamic: LeaseSource,
        record_uid: str,
        ttl_seconds: int,
        on_rotate: Optional[Callable[[Lease], None]] = None,
        grace_seconds: Optional[float] = None,
        on_error: Optional[Callable[[SyVaultError], None]] = None,
        revoke_on_close: bool = True,
    ) -> None:
        if not isinstance(ttl_seconds, int) or isinstance(ttl_seconds, bool) or ttl_seconds < 1:
            raise ConfigurationError("ttl_seconds must be a whole number of seconds, at least 1.")
        if grace_seconds is None:
            grace_seconds = min(30.0, ttl_seconds / 10)
        if grace_seconds < 0 or grace_seconds >= ttl_seconds / 3:
            raise ConfigurationError(
                "grace_seconds must be at least 0 and shorter than a third of ttl_seconds (%g): "
                "a rotation may start with only that much of the old lease left." % (ttl_seconds / 3)
            )
        self._dynamic = dynamic
        self._record_uid = record_uid
        self._ttl = ttl_seconds
        self._grace = float(grace_seconds)
        self._on_rotate = on_rotate
        self._on_error = on_error
        self._revoke_on_close = revoke_on_close
        self._cond = threading.Condition()
        self._closed = False
        self._error: Optional[SyVaultError] = None
        self._retiring: List[_Held] = []
        self._current = self._hold(self._obtain())
        self._thread = threading.Thread(target=self._run, name="syvault-keep-fresh", daemon=True)
        self._thread.start()

    # Public -----------------------------------------------------------------------------

    @property
    def lease(self) -> Lease:
        """The current lease: its credentials work, and ``expires_at`` follows renewals.

        Raises:
            SyVaultError: the keeper failed (code ``lease_expired`` or ``lease_ended``):
                its lease has ended and no new one could be had.
        """
        with self._cond:
            if self._error is not None:
                raise self._error
            return self._current.lease

    @property
    def error(self) -> Optional[SyVaultError]:
        """Why the keeper stopped keeping the lease fresh, or ``None`` while it does."""
        with self._cond:
            return self._error

    def close(self) -> None:
        """Stop the thread and revoke the leases held (the current one unless
        ``revoke_on_close`` is false). Idempotent.

        Raises:
            SyVaultError: a lease could not be revoked; it still expires on its own.
        """
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join()
        held = list(self._retiring)
        if self._revoke_on_close:
            held.append(self._current)
        else:
            log.info("lease kept lease_id=%s expires_at=%s", self._current.lease.lease_id, self._current.lease.expires_at)
        failure = None
        for h in held:
            if not h.usable():
                continue
            try:
                self._revoke(h)
            except SyVaultError as e:
                failure = failure or e
        if failure is not None:
            raise failure

    def __enter__(self) -> "LeaseKeeper":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
            return
        try:  # an exception is on its way already: do not replace it
            self.close()
        except SyVaultError as e:
            log.warning("lease not revoked on close: %s", e)

    def __repr__(self) -> str:
        with self._cond:
            return "LeaseKeeper(record_uid=%r, lease_id=%r, expires_at=%r)" % (
                self._record_uid, self._current.lease.lease_id, self._current.lease.expires_at)

    # The thread -------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                if self._closed:
                    return
                wait = self._wake_at() - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
            try:
                self._tick()
            except SyVaultError as e:
                self._fail(e)
                return
            except Exception as e:  # noqa: BLE001  (a thread that dies silently helps no one)
                log.exception("keeping the lease fresh failed")
                self._fail(SyVaultError("Keeping the lease fresh failed: %s." % type(e).__name__, code="internal"))
                return

    def _wake_at(self) -> float:
        return min([self._current.next] + [r.next for r in self._retiring])

    def _tick(self) -> None:
        now = time.monotonic()
        for r in list(self._retiring):
            if r.next <= now and not self._revoke_retiring(r):
                self._retiring.remove(r)
        if self._current.next <= now:
            self._refresh()

    def _obtain(self) -> Lease:
        lease = self._dynamic.create_lease(record_uid=self._record_uid, ttl_seconds=self._ttl)
        log.info("lease obtained lease_id=%s username=%s expires_at=%s", lease.lease_id, lease.username, lease.expires_at)
        return lease

    def _hold(self, lease: Lease) -> _Held:
        h = _Held(lease, time.monotonic())
        h.next = h.answered + renewal_delay(h.left(), random.random())
        return h

    def _refresh(self) -> None:
        cur = self._current
        if cur.replace or not cur.usable():
            self._rotate()
            return
        sent = time.monotonic()
        try:
            info = self._dynamic.renew_lease(cur.lease.lease_id, ttl_seconds=self._ttl)
        except (NotFoundError, ConflictError) as e:
            cur.replace = cur.ended = True  # revoked by someone else, or expired
            log.warning("lease ended lease_id=%s error=%s", cur.lease.lease_id, e)
            self._rotate()
            return
        except SyVaultError as e:
            self._retry(cur, "renew", e)
            return
        now = time.monotonic()
        renewed = Lease(dict(cur.lease.raw, expires_at=info.expires_at))
        capped = renewal_capped(cur.expires, renewed.expires_at_datetime, sent - cur.answered)  # type: ignore[arg-type]
        with self._cond:
            cur.lease = renewed
        cur.answered, cur.failures = now, 0
        log.info("lease renewed lease_id=%s expires_at=%s at_cap=%s", renewed.lease_id, renewed.expires_at, capped)
        if capped:
            cur.replace = True
            self._rotate()
            return
        cur.next = now + renewal_delay(cur.left(), random.random())

    def _rotate(self) -> None:
        old = self._current
        try:
            lease = self._obtain()
        except SyVaultError as e:
            if isinstance(e, RateLimitedError) and (old.ended or not old.usable()):
                # Nothing to fall back on meanwhile (a fleet rotating at once after its
                # leases were revoked): ask again when the server says, rather than fail.
                d = max(e.retry_after or 1, 1) + random.random()
                old.next = time.monotonic() + d
                log.warning("rate limited; asking again op=rotate lease_id=%s retry_in=%.3fs", old.lease.lease_id, d)
                return
            if old.ended:
                raise SyVaultError("Lease %s has ended and no new lease could be had: %s" % (old.lease.lease_id, e),
                                   code="lease_ended") from e
            if not old.usable():
                raise SyVaultError("Lease %s expired at %s and no new lease could be had: %s"
                                   % (old.lease.lease_id, old.lease.expires_at, e), code="lease_expired") from e
            self._retry(old, "rotate", e)
            return
        new = self._hold(lease)
        with self._cond:
            self._current = new
        log.info("lease rotated old_lease_id=%s lease_id=%s grace=%gs", old.lease.lease_id, lease.lease_id, self._grace)
        if self._on_rotate is not None:
            try:
                self._on_rotate(lease)
            except Exception:  # noqa: BLE001  (the application's problem; the lease stays fresh)
                log.exception("on_rotate failed lease_id=%s", lease.lease_id)
        if old.usable():
            old.next, old.failures = time.monotonic() + self._grace, 0
            self._retiring.append(old)

    def _retry(self, h: _Held, op: str, err: SyVaultError) -> None:
        h.failures += 1
        d = retry_delay(h.failures, h.left(), random.random())
        if isinstance(err, RateLimitedError) and h.left() > 0:
            # When the server said (plus up to a second, out of step with the rest of the
            # fleet): an earlier attempt would likely be refused too, each refusal one
            # more look-up of the client on the server. But never later than half the
            # credentials' time left, the backoff's own cap: a wait to just before the
            # expiry would leave no room for another attempt should that one fail
            # (another API process, with an allowance of its own, may take one).
            wait = max(err.retry_after or 1, 1) + random.random()
            d = max(d, min(wait, h.left() / 2))
        h.next = time.monotonic() + d
        log.warning("retrying op=%s lease_id=%s attempt=%d retry_in=%.3fs credentials_valid_until=%s error=%s",
                    op, h.lease.lease_id, h.failures, d, h.lease.expires_at, err)

    def _revoke_retiring(self, r: _Held) -> bool:
        """Revoke a replaced lease whose grace is over; whether to keep it for a retry."""
        try:
            self._revoke(r)
            return False
        except SyVaultError as e:
            if not r.usable():
                return False  # expired by itself meanwhile
            self._retry(r, "revoke", e)
            return True

    def _revoke(self, h: _Held) -> None:
        """Settled once revoked, ended already, or recorded by the server to finish when the
        database answers (502, 504); other failures raise."""
        lease_id = h.lease.lease_id
        try:
            self._dynamic.revoke_lease(lease_id)
            log.info("lease revoked lease_id=%s", lease_id)
        except NotFoundError:
            log.info("lease already ended lease_id=%s", lease_id)
        except (TargetUnavailableError, GatewayTimeoutError) as e:
            log.warning("lease revocation recorded, the server finishes it when the database answers lease_id=%s error=%s",
                        lease_id, e)

    def _fail(self, err: SyVaultError) -> None:
        log.error("giving up error=%s", err)
        with self._cond:
            self._error = err
        if self._on_error is not None:
            try:
                self._on_error(err)
            except Exception:  # noqa: BLE001
                log.exception("on_error failed")
