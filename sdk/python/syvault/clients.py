"""Client management (admin): register applications and operators by their public key."""

import os
import random
import time
from typing import Any, Dict, Iterable, List, Optional, Union

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ._auth import public_key_pem
from ._transport import Requester, _etag_headers, _id, _object
from .errors import ConfigurationError, PreconditionFailedError
from .models import ClientInfo

__all__ = ["Clients"]

_BASE = "/api/sm/v1/clients"

PublicKeyLike = Union[str, bytes, Ed25519PublicKey, Ed25519PrivateKey]

# How often an update is made again because the client changed between its read and its
# write: more would mean admins (or scripts) fighting over it.
_UPDATE_ATTEMPTS = 3


class Clients:
    """``client.clients``: register, list, show and remove clients (admin clients only; an
    app client gets :class:`~syvault.PermissionDeniedError`).

    Provisioning an application from Python::

        private_pem, public_pem = syvault.generate_key_pair()
        app = admin.clients.create(name="billing", public_key=public_pem,
                                   allowed_records=["7Kj9mNpQ2xRs"], max_ttl_seconds=3600)
        # hand app.client_id and private_pem to the application, which then runs
        SecretsManagerClient(server=..., client_id=app.client_id, private_key=private_pem)
    """

    def __init__(self, client: Requester) -> None:
        self._client = client

    def create(
        self,
        name: str,
        public_key: Optional[PublicKeyLike] = None,
        *,
        public_key_path: Optional[Union[str, "os.PathLike[str]"]] = None,
        role: str = "app",
        allowed_records: Iterable[str] = (),
        max_ttl_seconds: Optional[int] = None,
        max_leases: Optional[int] = None,
    ) -> ClientInfo:
        """Register a client by its Ed25519 public key (admin only).

        Args:
            name: a label, 1 to 128 characters.
            public_key: PKIX PEM text (``str`` or ``bytes``, ``-----BEGIN PUBLIC KEY-----``),
                or a ``cryptography`` Ed25519 key object (of a private key object, only the
                public half is sent). See :func:`syvault.generate_key_pair`.
            public_key_path: path of a PEM file, instead of ``public_key``.
            role: ``"app"`` (default: may lease ``allowed_records`` only, sees its own
                leases) or ``"admin"`` (everything, including this API).
            allowed_records: record uids the client may lease; each must be a registered
                target.
            max_ttl_seconds: cap on the client's lease TTLs (1 to 86400); ``None`` (or 0):
                no cap beyond the target's.
            max_leases: most leases the client may hold at once (1 to 10000), counting
                each until its database user is dropped; one more is refused with
                :class:`~syvault.TooManyLeasesError`. ``None`` (or 0): no cap. A
                :class:`~syvault.LeaseKeeper` holds two leases during a rotation's grace.

        Returns:
            ClientInfo: with the new ``client_id`` to configure the application with.

        Raises:
            ConfigurationError: no public key, both forms, an unreadable file, a key that is
                not Ed25519, or private key text (which is refused and never sent).
            InvalidRequestError: a bad name, role or ``max_leases``; ``InvalidTTLError`` for
                ``max_ttl_seconds``.
            NotFoundError: ``allowed_records`` names an unknown target.
            PermissionDeniedError: not an admin client.
        """
        if (public_key is None) == (public_key_path is None):
            raise ConfigurationError("Pass exactly one of public_key= or public_key_path=.")
        public_key = _read_key(public_key, public_key_path)
        if isinstance(allowed_records, (str, bytes)):
            raise TypeError("allowed_records must be a list of record uids, not a single string.")
        body: Dict[str, Any] = {
            "name": name,
            "public_key": public_key_pem(public_key),  # type: ignore[arg-type]
            "role": role,
            "allowed_records": list(allowed_records),
        }
        if max_ttl_seconds is not None:
            body["max_ttl_seconds"] = max_ttl_seconds
        if max_leases is not None:
            body["max_leases"] = max_leases
        return ClientInfo(_object(self._client.request("POST", _BASE, body), "the client registration"))

    def update(
        self,
        client_id: str,
        *,
        name: Optional[str] = None,
        public_key: Optional[PublicKeyLike] = None,
        public_key_path: Optional[Union[str, "os.PathLike[str]"]] = None,
        role: Optional[str] = None,
        allowed_records: Optional[Iterable[str]] = None,
        max_ttl_seconds: Optional[int] = None,
        max_leases: Optional[int] = None,
    ) -> ClientInfo:
        """Change a client's settings, keeping its ``client_id`` (admin only).

        Only the arguments given change; the rest stay as the server has them (read first,
        then replaced with ``PUT`` on the version read: a change another admin makes in
        between is kept, and this one applied to it). ``allowed_records`` replaces the list: on a record
        taken away the client can neither lease nor renew, and its leases there end at
        their expiry (or when revoked). ``max_ttl_seconds=0`` and ``max_leases=0`` remove
        those caps. A new public key ends every access token had with the old one.

        Returns:
            ClientInfo: the client as it now stands.

        Raises:
            ConfigurationError: both key forms, an unreadable file, or private key text.
            InvalidRequestError: a bad name, role or cap.
            NotFoundError: unknown client, or ``allowed_records`` names an unknown target.
            ConflictError: the name is another client's, or a client changing its own role.
            PreconditionFailedError: the client changed between each of three reads and
                their updates (another admin or script is changing it).
        """
        if public_key is not None and public_key_path is not None:
            raise ConfigurationError("Pass at most one of public_key= or public_key_path=.")
        if isinstance(allowed_records, (str, bytes)):
            raise TypeError("allowed_records must be a list of record uids, not a single string.")
        if public_key is not None or public_key_path is not None:
            public_key = public_key_pem(_read_key(public_key, public_key_path))  # type: ignore[arg-type]
        path = _BASE + "/" + _id("client_id", client_id)
        # The update is sent on the version read (If-Match): should another admin change
        # the client in between, the arguments are applied again to what it then holds,
        # rather than this read's other settings undoing that change.
        for attempt in range(1, _UPDATE_ATTEMPTS + 1):
            cur = self.get(client_id)
            body: Dict[str, Any] = {
                "name": cur.name if name is None else name,
                "public_key": cur.public_key if public_key is None else public_key,
                "role": cur.role if role is None else role,
                "allowed_records": list(cur.allowed_records if allowed_records is None else allowed_records),
            }
            for field, given in (("max_ttl_seconds", max_ttl_seconds), ("max_leases", max_leases)):
                value = getattr(cur, field) if given is None else given
                if value:
                    body[field] = value
            try:
                answer, headers = self._client.exchange("PUT", path, body, headers=_etag_headers(cur.etag))
            except PreconditionFailedError:
                if attempt == _UPDATE_ATTEMPTS:
                    raise
                # A little longer each time, jittered, so that two callers fighting over
                # one client fall out of step.
                time.sleep(attempt * 0.1 + random.random() * 0.1)
                continue
            info = ClientInfo(_object(answer, "the client update"))
            info.etag = headers.get("ETag")
            return info
        raise AssertionError("unreachable")  # pragma: no cover

    def list(self) -> List[ClientInfo]:
        """Every client, oldest first (admin only)."""
        body = _object(self._client.request("GET", _BASE), "the client list")
        return [ClientInfo(d) for d in (body.get("data") or []) if isinstance(d, dict)]

    def get(self, client_id: str) -> ClientInfo:
        """One client (admin only). Raises :class:`~syvault.NotFoundError` for an unknown id."""
        answer, headers = self._client.exchange("GET", _BASE + "/" + _id("client_id", client_id))
        info = ClientInfo(_object(answer, "the client query"))
        info.etag = headers.get("ETag")
        return info

    def delete(self, client_id: str) -> None:
        """Remove a client (admin only). Its access tokens stop working at once (its next
        request fails with :class:`~syvault.AuthenticationError`); its active leases keep
        their expiry (revoke them first if they must end now).

        Raises:
            ConflictError: a client cannot delete itself.
            NotFoundError: unknown client id.
        """
        self._client.request("DELETE", _BASE + "/" + _id("client_id", client_id))


def _read_key(public_key: Optional[PublicKeyLike], public_key_path: Optional[Union[str, "os.PathLike[str]"]]) -> PublicKeyLike:
    """The key given, or the content of the file named."""
    if public_key_path is None:
        return public_key  # type: ignore[return-value]
    try:
        with open(os.fspath(public_key_path), "rb") as f:
            return f.read()
    except OSError as e:
        raise ConfigurationError(
            "Cannot read the public key file %s: %s." % (os.fspath(public_key_path), e.strerror or e)
        ) from None
