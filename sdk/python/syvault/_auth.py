"""Ed25519 client keys and JWT client assertions (RFC 7523), with ``cryptography`` only."""

import base64
import json
import time
import uuid
from typing import Any, Dict, Optional, Tuple, Union

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

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


#: What to do without a usable key; every refusal of one ends with it.
KEY_HELP = (
    "Make a key pair with `sy keygen --out client.pem` (or syvault.generate_key_pair()) and register "
    "client.pub.pem with `sy client create`; a JSON credentials file such as admin-client.json is read "
    "by SecretsManagerClient.from_credentials_file(path)."
)


def load_private_key(pem: Union[str, bytes], source: str = "The private key") -> Ed25519PrivateKey:
    """Parse an Ed25519 private key in PKCS#8 PEM form (``-----BEGIN PRIVATE KEY-----``).

    Raises :class:`~syvault.ConfigurationError` (whose message never includes the key) when
    the text is not such a key, naming ``source`` and saying what to use instead: for a
    JSON credentials file, :meth:`SecretsManagerClient.from_credentials_file`.
    """
    data = pem.encode("utf-8") if isinstance(pem, str) else bytes(pem)
    if _is_credentials_json(data):
        raise ConfigurationError(
            "%s is a JSON credentials file (server, client_id, private_key), not a PEM key: "
            "load it with SecretsManagerClient.from_credentials_file(path) instead." % source
        )
    if b"-----BEGIN PUBLIC KEY-----" in data and b"PRIVATE KEY" not in data:
        raise ConfigurationError(
            "%s holds a public key; pass the private one (client.pem, not the client.pub.pem that "
            "`sy keygen --out client.pem` writes beside it)." % source
        )
    if b"-----BEGIN PRIVATE KEY-----" not in data:
        raise ConfigurationError(
            "%s must be an Ed25519 key in PKCS#8 PEM form (-----BEGIN PRIVATE KEY-----). %s" % (source, KEY_HELP)
        )
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except Exception:  # never chain: the cause could quote the key material
        key = None
    if key is None:
        raise ConfigurationError("%s could not be parsed (expected unencrypted PKCS#8 PEM). %s" % (source, KEY_HELP))
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigurationError("%s must be an Ed25519 key, not %s. %s" % (source, type(key).__name__, KEY_HELP))
    return key


def _is_credentials_json(data: bytes) -> bool:
    """Whether data is a JSON object with a private_key field, like admin-client.json."""
    if not data.lstrip().startswith(b"{"):
        return False
    try:
        obj = json.loads(data.decode("utf-8"))
    except ValueError:
        return False
    return isinstance(obj, dict) and "private_key" in obj


def generate_key_pair() -> Tuple[str, str]:
    """A new Ed25519 key pair for a client: ``(private_pem, public_pem)``, both ``str``.

    ``private_pem`` is unencrypted PKCS#8 PEM (``-----BEGIN PRIVATE KEY-----``), what
    :class:`~syvault.SecretsManagerClient` takes as ``private_key=`` (or, saved to a file
    only its owner can read, as ``private_key_path=``). ``public_pem`` is PKIX PEM
    (``-----BEGIN PUBLIC KEY-----``), what ``client.clients.create(public_key=...)``
    registers. Keep the private key away from the server: it only ever needs the public one.
    """
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")
    return private_pem, public_key_pem(key.public_key())


def public_key_pem(key: Union[str, bytes, Ed25519PublicKey, Ed25519PrivateKey]) -> str:
    """The PKIX PEM (``-----BEGIN PUBLIC KEY-----``) of an Ed25519 public key given as PEM
    text or a ``cryptography`` key object. A private key *object* gives its public half;
    private key *text* is refused, so that it is never sent anywhere by mistake.

    Raises:
        ConfigurationError: not an Ed25519 public key (the message never quotes the input).
    """
    if isinstance(key, Ed25519PrivateKey):
        key = key.public_key()
    if not isinstance(key, Ed25519PublicKey):
        if not isinstance(key, (str, bytes, bytearray)):
            raise ConfigurationError("The public key must be PEM text or an Ed25519PublicKey, not %s." % type(key).__name__)
        data = key.encode("utf-8") if isinstance(key, str) else bytes(key)
        if b"PRIVATE KEY" in data:
            raise ConfigurationError(
                "That is a private key; pass the public one (-----BEGIN PUBLIC KEY-----). "
                "The private key must never leave the client."
            )
        if b"-----BEGIN PUBLIC KEY-----" not in data:
            raise ConfigurationError("The public key must be an Ed25519 key in PKIX PEM form (-----BEGIN PUBLIC KEY-----).")
        try:
            loaded = serialization.load_pem_public_key(data)
        except Exception:
            loaded = None
        if loaded is None:
            raise ConfigurationError("The public key could not be parsed (expected PKIX PEM).")
        if not isinstance(loaded, Ed25519PublicKey):
            raise ConfigurationError("The public key must be an Ed25519 key, not %s." % type(loaded).__name__)
        key = loaded
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode("ascii")


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
