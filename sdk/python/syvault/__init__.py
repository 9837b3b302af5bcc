"""SyVault Python SDK: short-lived database credentials from a SyVault server.

    from syvault import SecretsManagerClient
    client = SecretsManagerClient(server="https://vault.example.com",
                                  client_id="c9a1b2d3-...", private_key_path="/etc/syvault/client.pem")
    lease = client.dynamic.create_lease(record_uid="7Kj9mNpQ2xRs", ttl_seconds=3600)
    ...
    client.dynamic.revoke_lease(lease.lease_id)

A long-running application keeps its credentials fresh with
``client.dynamic.keep_fresh(...)`` (a :class:`LeaseKeeper`: renewed, replaced at the
lease's cap, revoked on close).

Admin clients also manage clients (``client.clients``, with :func:`generate_key_pair`),
targets (``client.dynamic.*_target``) and read the audit trail (``client.audit``).

Needs only the standard library and ``cryptography``.
"""

from ._version import __version__
from ._auth import generate_key_pair, public_key_pem
from .audit import Audit, format_time
from .client import SecretsManagerClient
from .clients import Clients
from .dynamic import DynamicSecrets
from .keeper import LeaseKeeper
from .errors import (
    AuthenticationError,
    ConfigurationError,
    ConflictError,
    GatewayTimeoutError,
    InvalidRequestError,
    InvalidTTLError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    PreconditionFailedError,
    RateLimitedError,
    ServerError,
    ServiceUnavailableError,
    SyVaultConnectionError,
    SyVaultError,
    TargetUnavailableError,
    TargetUnverifiedError,
    TooManyLeasesError,
)
from .models import AuditEvent, AuditPage, ClientInfo, Lease, LeaseInfo, LeasePage, Target

__all__ = [
    "__version__",
    "SecretsManagerClient",
    "DynamicSecrets",
    "LeaseKeeper",
    "Clients",
    "Audit",
    "generate_key_pair",
    "public_key_pem",
    "format_time",
    "Lease",
    "LeaseInfo",
    "LeasePage",
    "Target",
    "ClientInfo",
    "AuditEvent",
    "AuditPage",
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
]
