"""Ed25519 client keys and JWT client assertions (RFC 7523), with ``cryptography`` only."""

import base64
import json
import time
import uuid
from typing import Any, Dict, Optional, Union

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .errors import ConfigurationError

#: How long a client assertion is valid. The server accepts at most 5 minutes.
ASSERTION_LIFETIME_SECONDS = 120

JWT_BEARER_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def b64url(data: bytes) -> str:
    """base64url without padding, as JWTs use."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Inverse of :func:`b64url` (accepts missing padding)."""
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def load_private_key(pem: Union[str, bytes]) -> Ed25519PrivateKey:
    """Parse an Ed25519 private key in PKCS#8 PEM form (``-----BEGIN PRIVATE KEY-----``).

    Raises :class:`~syvault.ConfigurationError` (whose message never includes the key) when
    the text is not such a key.
    """
    data = pem.encode("utf-8") if isinstance(pem, str) else bytes(pem)
    if b"-----BEGIN PRIVATE KEY-----" not in data:
        raise ConfigurationError(
            "The private key must be an Ed25519 key in PKCS#8 PEM form (-----BEGIN PRIVATE KEY-----)."
        )
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except Exception:  # never chain: the cause could quote the key material
        key = None
    if key is None:
        raise ConfigurationError("The private key could not be parsed (expected unencrypted PKCS#8 PEM).")
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigurationError("The private key must be an Ed25519 key, not %s." % type(key).__name__)
    return key


def make_assertion(
    key: Ed25519PrivateKey,
    client_id: str,
    audience: str,
    now: Optional[float] = None,
    lifetime: int = ASSERTION_LIFETIME_SECONDS,
) -> str:
    """Sign a fresh client assertion: a compact JWS with header ``{"alg":"EdDSA","typ":"JWT"}``
    and claims ``iss`` = ``sub`` = ``client_id``, ``aud`` = ``audience`` (the server URL),
    ``iat``, ``exp`` = ``iat`` + ``lifetime`` and a random ``jti``."""
    if not 1 <= lifetime <= 300:
        raise ValueError("assertion lifetime must be between 1 and 300 seconds")
    iat = int(time.time() if now is None else now)
    header = {"alg": "EdDSA", "typ": "JWT"}
    claims: Dict[str, Any] = {
        "iss": client_id,
        "sub": client_id,
        "aud": audience,
        "iat": iat,
        "exp": iat + lifetime,
        "jti": str(uuid.uuid4()),
    }
    signing_input = (_segment(header) + "." + _segment(claims)).encode("ascii")
    return signing_input.decode("ascii") + "." + b64url(key.sign(signing_input))


def _segment(obj: Dict[str, Any]) -> str:
    return b64url(json.dumps(obj, separators=(",", ":"), sort_keys=False).encode("utf-8"))
