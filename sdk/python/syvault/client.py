"""The SyVault client: authentication (Ed25519 client assertion → cached bearer token) and
the HTTP transport, with the standard library only."""

import json
import os
import socket
import ssl
import threading
import time
import http.client
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Dict, Mapping, Optional, Tuple, Union

from ._version import __version__
from ._auth import JWT_BEARER_ASSERTION_TYPE, KEY_HELP, load_private_key, make_assertion
from .audit import Audit
from .clients import Clients
from .dynamic import DynamicSecrets
from .errors import (
    AuthenticationError,
    ConfigurationError,
    RateLimitedError,
    SyVaultConnectionError,
    SyVaultError,
    error_from_response,
)

__all__ = ["SecretsManagerClient", "API_BASE"]

API_BASE = "/api/sm/v1"

# A cached token is replaced this long before it expires (or at half its life if shorter).
TOKEN_REFRESH_MARGIN_SECONDS = 60.0

_MAX_RESPONSE_BYTES = 16 << 20


class SecretsManagerClient:
    """A client of one SyVault server, authenticating as one client.

    Example (the product document's usage)::

        from syvault import SecretsManagerClient
        client = SecretsManagerClient(
            server="https://vault.example.com",
            client_id="c9a1b2d3-4e5f-6789-abcd-ef0123456789",
            private_key_path="/etc/syvault/client.pem",
        )
        lease = client.dynamic.create_lease(record_uid="7Kj9mNpQ2xRs", ttl_seconds=3600)

    Args:
        server: the server's URL, ``scheme://host[:port]`` (``https`` in production). It is
            also the audience of the client assertions, so use the URL the server knows
            itself by (its ``--public-url``). A trailing slash is ignored.
        client_id: the client's id (a UUID).
        private_key_path: path of the client's Ed25519 private key, PKCS#8 PEM.
        private_key: the PEM text itself, instead of ``private_key_path``.
        timeout: seconds to wait for each HTTP answer (default 60; the server itself gives
            up on database work after its ``--request-timeout``, 20 s by default).
        ssl_context: an :class:`ssl.SSLContext` for ``https`` (e.g. a private CA);
            by default the system's trusted CAs verify the server.

    The client is safe to share between threads: it caches its access token and refreshes
    it a minute before it expires, under a lock.

    Raises:
        ConfigurationError: bad URL, missing/unreadable/invalid key, or both key arguments.
    """

    def __init__(
        self,
        server: str,
        client_id: str,
        private_key_path: Optional[Union[str, "os.PathLike[str]"]] = None,
        *,
        private_key: Optional[Union[str, bytes]] = None,
        timeout: float = 60.0,
        ssl_context: Optional[ssl.SSLContext] = None,
    ) -> None:
        self._server = _normalize_server(server)
        if not isinstance(client_id, str) or not client_id.strip():
            raise ConfigurationError("client_id is required.")
        self._client_id = client_id.strip()
        if (private_key_path is None) == (private_key is None):
            raise ConfigurationError("Pass exactly one of private_key_path= or private_key=.")
        if private_key_path is not None:
            path = os.fspath(private_key_path)
            try:
                with open(path, "rb") as f:
                    pem: Union[str, bytes] = f.read()
            except OSError as e:
                raise ConfigurationError(
                    "Cannot read the private key file %s: %s. %s" % (path, e.strerror or e, KEY_HELP)
                ) from None
            source = "The file %s (private_key_path=)" % path
        else:
            pem = private_key  # type: ignore[assignment]
            source = "private_key="
            if isinstance(pem, str) and "\n" not in pem.strip() and "-----" not in pem and os.path.isfile(pem.strip()):
                raise ConfigurationError("private_key= takes the PEM text itself; pass the file %s as private_key_path=." % pem.strip())
        self._key = load_private_key(pem, source)
        self._timeout = timeout
        handlers: "list[urllib.request.BaseHandler]" = [_NoRedirects()]
        if ssl_context is not None:
            handlers.append(urllib.request.HTTPSHandler(context=ssl_context))
        self._opener = urllib.request.build_opener(*handlers)
        self._lock = threading.Lock()
        self._token: Optional[str] = None
        self._token_expires = 0.0  # time.monotonic() at which the token expires
        self._token_refresh_at = 0.0
        #: How many access tokens this client has fetched (for tests and metrics).
        self.token_requests = 0
        #: Dynamic secrets: leases and targets (:class:`syvault.dynamic.DynamicSecrets`).
        self.dynamic = DynamicSecrets(self)
        #: Client management, admin only (:class:`syvault.clients.Clients`).
        self.clients = Clients(self)
        #: The audit trail, admin only (:class:`syvault.audit.Audit`).
        self.audit = Audit(self)

    # Alternative constructors -----------------------------------------------------------

    @classmethod
    def from_credentials_file(cls, path: Union[str, "os.PathLike[str]"], **kwargs: Any) -> "SecretsManagerClient":
        """A client from a JSON credentials file ``{"server", "client_id", "private_key"}``,
        such as the ``admin-client.json`` that ``syvault serve --dev`` writes."""
        try:
            with open(os.fspath(path), "r", encoding="utf-8") as f:
                creds = json.load(f)
        except (OSError, ValueError) as e:
            raise ConfigurationError("Cannot read the credentials file %s: %s." % (os.fspath(path), type(e).__name__)) from None
        if not isinstance(creds, dict) or not all(isinstance(creds.get(k), str) for k in ("server", "client_id", "private_key")):
            raise ConfigurationError("The credentials file %s needs string fields server, client_id and private_key." % os.fspath(path))
        return cls(server=creds["server"], client_id=creds["client_id"], private_key=creds["private_key"], **kwargs)

    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None, **kwargs: Any) -> "SecretsManagerClient":
        """A client configured like the ``sy`` CLI: ``SY_SERVER``, ``SY_CLIENT_ID`` and
        ``SY_PRIVATE_KEY`` (the PEM) or ``SY_PRIVATE_KEY_FILE``; or ``SY_CREDENTIALS_FILE``."""
        env = os.environ if environ is None else environ
        if env.get("SY_CREDENTIALS_FILE") and not env.get("SY_SERVER"):
            return cls.from_credentials_file(env["SY_CREDENTIALS_FILE"], **kwargs)
        server, client_id = env.get("SY_SERVER"), env.get("SY_CLIENT_ID")
        if not server or not client_id:
            raise ConfigurationError("Set SY_SERVER and SY_CLIENT_ID (or SY_CREDENTIALS_FILE).")
        if env.get("SY_PRIVATE_KEY"):
            return cls(server=server, client_id=client_id, private_key=env["SY_PRIVATE_KEY"], **kwargs)
        if env.get("SY_PRIVATE_KEY_FILE"):
            return cls(server=server, client_id=client_id, private_key_path=env["SY_PRIVATE_KEY_FILE"], **kwargs)
        raise ConfigurationError("Set SY_PRIVATE_KEY (the PEM) or SY_PRIVATE_KEY_FILE.")

    # Properties -------------------------------------------------------------------------

    @property
    def server(self) -> str:
        """The server URL (no trailing slash); also the audience of client assertions."""
        return self._server

    @property
    def client_id(self) -> str:
        """The client id this client authenticates as."""
        return self._client_id

    def __repr__(self) -> str:
        return "SecretsManagerClient(server=%r, client_id=%r)" % (self._server, self._client_id)

    # Authentication ---------------------------------------------------------------------

    def client_assertion(self) -> str:
        """A fresh signed client assertion (JWT) for the token endpoint. Each is single-use."""
        return make_assertion(self._key, self._client_id, self._server)

    def get_token(self, force_refresh: bool = False) -> str:
        """A valid access token (``Authorization: Bearer ...`` of the API), from the cache
        unless it expires within a minute (or ``force_refresh``). Thread-safe.

        Raises:
            AuthenticationError: the server refused the client id, key or assertion.
            SyVaultConnectionError: the server could not be reached.
        """
        return self._token_state(force_refresh)[0]

    def _token_state(self, force_refresh: bool = False) -> "tuple[str, bool]":
        """(token, whether it was just fetched)."""
        with self._lock:
            now = time.monotonic()
            if not force_refresh and self._token is not None and now < self._token_refresh_at:
                return self._token, False
            token, expires_in = self._request_token()
            now = time.monotonic()
            self._token = token
            self._token_expires = now + expires_in
            self._token_refresh_at = now + expires_in - min(TOKEN_REFRESH_MARGIN_SECONDS, expires_in / 2.0)
            return token, True

    def invalidate_token(self) -> None:
        """Forget the cached access token; the next call fetches a new one."""
        with self._lock:
            self._token = None
            self._token_expires = self._token_refresh_at = 0.0

    def _request_token(self) -> "tuple[str, float]":
        """POST a client assertion to the token endpoint; returns (token, expires_in)."""
        form = urllib.parse.urlencode(
            {
                "grant_type": "client_credentials",
                "client_assertion_type": JWT_BEARER_ASSERTION_TYPE,
                "client_assertion": self.client_assertion(),
            }
        ).encode("ascii")
        self.token_requests += 1
        body, _ = self._send(
            "POST",
            API_BASE + "/auth/token",
            form,
            {"Content-Type": "application/x-www-form-urlencoded"},
        )
        if not isinstance(body, dict) or not isinstance(body.get("access_token"), str) or not body["access_token"]:
            raise SyVaultError("The token endpoint answered without an access_token.", code="invalid_response")
        expires_in = body.get("expires_in")
        if not isinstance(expires_in, (int, float)) or isinstance(expires_in, bool) or expires_in <= 0:
            expires_in = 300  # unknown lifetime: assume a short one
        return body["access_token"], float(expires_in)

    # Transport --------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        json_body: Any = None,
        query: Optional[Mapping[str, Any]] = None,
    ) -> Any:
        """Send an authenticated API request and return the decoded JSON answer (``None`` for
        204). ``path`` is relative to the server, e.g. ``"/api/sm/v1/dynamic/leases"``.

        If the server refuses a cached token (401), the token is dropped and the request is
        sent once more with a fresh one (a 401 means the server did nothing).

        Raises:
            SyVaultError: a subclass matching the server's error answer.
            SyVaultConnectionError: the server could not be reached.
        """
        return self.exchange(method, path, json_body, query)[0]

    def exchange(
        self,
        method: str,
        path: str,
        json_body: Any = None,
        query: Optional[Mapping[str, Any]] = None,
        headers: Optional[Mapping[str, str]] = None,
    ) -> Tuple[Any, Mapping[str, str]]:
        """:meth:`request` with more request ``headers`` (e.g. ``If-Match``), returning the
        decoded answer and the answer's headers (e.g. its ``ETag``), which are looked up
        without regard to case."""
        if query:
            q = {k: _query_value(v) for k, v in query.items() if v is not None}
            if q:
                path += "?" + urllib.parse.urlencode(q)
        data = None
        sent = dict(headers or {})
        if json_body is not None:
            data = json.dumps(json_body).encode("utf-8")
            sent["Content-Type"] = "application/json"
        for attempt in (1, 2):
            token, fresh = self._token_state()
            sent["Authorization"] = "Bearer " + token
            try:
                return self._send(method, path, data, sent)
            except AuthenticationError:
                if attempt == 2 or fresh:
                    raise
                with self._lock:
                    if self._token == token:
                        self._token = None
        raise AssertionError("unreachable")  # pragma: no cover

    def _send(self, method: str, path: str, data: Optional[bytes], headers: Dict[str, str]) -> Tuple[Any, Mapping[str, str]]:
        url = self._server + path
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("Accept", "application/json")
        req.add_header("User-Agent", "syvault-python/%s" % __version__)
        for k, v in headers.items():
            req.add_header(k, v)
        where = "%s %s" % (method, url.split("?", 1)[0])
        try:
            with self._opener.open(req, timeout=self._timeout) as resp:
                status = resp.status
                got = resp.headers
                raw = resp.read(_MAX_RESPONSE_BYTES + 1)
        except urllib.error.HTTPError as e:
            try:
                raw = e.read(_MAX_RESPONSE_BYTES + 1)
            except Exception:
                raw = b""
            finally:
                e.close()
            if 300 <= e.code < 400:
                raise SyVaultConnectionError(
                    "The SyVault server's address answered with a redirect (HTTP %d, %s), which the SDK does not follow: "
                    "a redirect would carry the token or the client assertion elsewhere. Set server= to the API's own address."
                    % (e.code, where)
                ) from None
            err = _error_of(e.code, raw)
            if isinstance(err, RateLimitedError):
                after = (e.headers.get("Retry-After") or "").strip()
                err.retry_after = int(after) if after.isdigit() else None
            raise err from None
        except urllib.error.URLError as e:
            raise SyVaultConnectionError("Could not reach the SyVault server (%s): %s." % (where, _reason(e.reason))) from e
        except (socket.timeout, TimeoutError) as e:
            raise SyVaultConnectionError(
                "The SyVault server did not answer within %gs (%s)." % (self._timeout, where)
            ) from e
        except (http.client.HTTPException, OSError) as e:
            raise SyVaultConnectionError("The connection to the SyVault server failed (%s): %s." % (where, _reason(e))) from e
        if len(raw) > _MAX_RESPONSE_BYTES:
            raise SyVaultError("The server's answer is too large.", status=status, code="invalid_response")
        if status == 204 or not raw.strip():
            return None, got
        try:
            return json.loads(raw.decode("utf-8")), got
        except ValueError:
            raise SyVaultError(
                "The server answered %d with a body that is not JSON (%s)." % (status, where),
                status=status,
                code="invalid_response",
            ) from None


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """Follows no redirect. urllib's own handler sends every header but the body's on to
    the new address, whatever its host or scheme: the bearer token, or the signed client
    assertion (good for minutes), would go to wherever a proxy or a hostile answer points,
    and the SyVault API never redirects. The 3xx is then raised as an HTTPError."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[override]
        return None


def _normalize_server(server: Any) -> str:
    if not isinstance(server, str) or not server.strip():
        raise ConfigurationError("server is required, e.g. https://vault.example.com.")
    s = server.strip().rstrip("/")
    try:
        u = urllib.parse.urlsplit(s)
        u.port  # noqa: B018  (validates the port)
    except ValueError:
        raise ConfigurationError("server must be an http(s) URL like https://vault.example.com, got %r." % server) from None
    if u.scheme not in ("http", "https") or not u.hostname or u.query or u.fragment or u.username or u.password:
        raise ConfigurationError("server must be an http(s) URL like https://vault.example.com, got %r." % server)
    return s


def _query_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _reason(reason: Any) -> str:
    if isinstance(reason, BaseException):
        text = reason.strerror if isinstance(reason, OSError) and reason.strerror else str(reason)
        return text or type(reason).__name__
    return str(reason)


def _error_of(status: int, raw: bytes) -> SyVaultError:
    code = message = None
    try:
        body = json.loads(raw.decode("utf-8"))
        if isinstance(body, dict):
            code = body.get("error") if isinstance(body.get("error"), str) else None
            message = body.get("message") if isinstance(body.get("message"), str) else None
    except ValueError:
        pass
    if message is None:
        message = http.client.responses.get(status, "HTTP error %d" % status) + " (the answer carried no SyVault error)."
    return error_from_response(status, code, message)

