"""Tests that need no SyVault server: assertions, keys, errors, models, and the transport
against a tiny in-process HTTP server."""

import json
import os
import re
import socket
import tempfile
import threading
import time
import unittest
import unittest.mock
import urllib.parse
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import _harness  # noqa: F401  (puts the SDK first on sys.path)

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

import syvault
from syvault import SecretsManagerClient
from syvault._auth import b64url_decode
from syvault.errors import error_from_response
from syvault.audit import format_time
from syvault.keeper import renewal_capped, renewal_delay, retry_delay
from syvault.models import LeaseInfo, parse_time

CLIENT_ID = "c9a1b2d3-4e5f-6789-abcd-ef0123456789"


def new_key_pem():
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return key, pem


def decode_jwt(token):
    parts = token.split(".")
    assert len(parts) == 3, token
    header = json.loads(b64url_decode(parts[0]))
    claims = json.loads(b64url_decode(parts[1]))
    return parts, header, claims


class AssertionTests(unittest.TestCase):
    def setUp(self):
        self.key, self.pem = new_key_pem()
        self.client = SecretsManagerClient(server="https://vault.example.com/", client_id=CLIENT_ID, private_key=self.pem)

    def test_header_and_claims(self):
        before = int(time.time())
        parts, header, claims = decode_jwt(self.client.client_assertion())
        after = int(time.time())
        self.assertEqual(header, {"alg": "EdDSA", "typ": "JWT"})
        self.assertEqual(claims["iss"], CLIENT_ID)
        self.assertEqual(claims["sub"], CLIENT_ID)
        self.assertEqual(claims["aud"], "https://vault.example.com")  # as configured, no trailing slash
        self.assertIsInstance(claims["iat"], int)
        self.assertIsInstance(claims["exp"], int)
        self.assertTrue(before <= claims["iat"] <= after)
        self.assertGreater(claims["exp"], claims["iat"])
        self.assertLessEqual(claims["exp"] - claims["iat"], 300)
        self.assertTrue(claims["jti"])
        for p in parts:  # base64url without padding
            self.assertRegex(p, r"^[A-Za-z0-9_-]+$")

    def test_jti_unique(self):
        jtis = {decode_jwt(self.client.client_assertion())[2]["jti"] for _ in range(50)}
        self.assertEqual(len(jtis), 50)

    def test_signature_verifies_with_public_key(self):
        parts, _, _ = decode_jwt(self.client.client_assertion())
        signing_input = (parts[0] + "." + parts[1]).encode()
        signature = b64url_decode(parts[2])
        self.assertEqual(len(signature), 64)
        self.key.public_key().verify(signature, signing_input)  # raises InvalidSignature if wrong
        other, _ = new_key_pem()
        from cryptography.exceptions import InvalidSignature

        with self.assertRaises(InvalidSignature):
            other.public_key().verify(signature, signing_input)

    def test_audience_keeps_port(self):
        c = SecretsManagerClient(server="http://127.0.0.1:8200", client_id=CLIENT_ID, private_key=self.pem)
        self.assertEqual(decode_jwt(c.client_assertion())[2]["aud"], "http://127.0.0.1:8200")


class ConfigurationTests(unittest.TestCase):
    def setUp(self):
        self.key, self.pem = new_key_pem()
        self.tmp = tempfile.TemporaryDirectory()
        self.addCleanup(self.tmp.cleanup)

    def test_private_key_path_and_text_agree(self):
        path = Path(self.tmp.name) / "client.pem"
        path.write_text(self.pem)
        a = SecretsManagerClient(server="https://v.example.com", client_id=CLIENT_ID, private_key_path=str(path))
        b = SecretsManagerClient(server="https://v.example.com", client_id=CLIENT_ID, private_key=self.pem)
        c = SecretsManagerClient(server="https://v.example.com", client_id=CLIENT_ID, private_key_path=path)
        for cl in (a, b, c):
            parts, _, _ = decode_jwt(cl.client_assertion())
            self.key.public_key().verify(b64url_decode(parts[2]), (parts[0] + "." + parts[1]).encode())

    def test_exactly_one_key_argument(self):
        with self.assertRaises(syvault.ConfigurationError):
            SecretsManagerClient(server="https://v.example.com", client_id=CLIENT_ID)
        path = Path(self.tmp.name) / "k.pem"
        path.write_text(self.pem)
        with self.assertRaises(syvault.ConfigurationError):
            SecretsManagerClient(server="https://v.example.com", client_id=CLIENT_ID, private_key_path=str(path), private_key=self.pem)

    def test_bad_keys_never_echo_the_key(self):
        ec_pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
        broken = self.pem.replace(self.pem.splitlines()[1], "AAAA" + self.pem.splitlines()[1][4:])
        for bad in (ec_pem, "not a key", broken, self.pem.replace("PRIVATE KEY", "PUBLIC KEY")):
            with self.assertRaises(syvault.ConfigurationError) as cm:
                SecretsManagerClient(server="https://v.example.com", client_id=CLIENT_ID, private_key=bad)
            text = str(cm.exception) + repr(cm.exception)
            for line in bad.splitlines():
                if len(line) > 20:
                    self.assertNotIn(line, text)
            self.assertIsNone(cm.exception.__cause__)
            self.assertIsInstance(cm.exception, ValueError)

    def test_wrong_key_sources_say_what_to_use(self):
        creds = json.dumps({"server": "http://127.0.0.1:8200", "client_id": CLIENT_ID, "private_key": self.pem})
        creds_path = Path(self.tmp.name) / "admin-client.json"
        creds_path.write_text(creds)
        key_path = Path(self.tmp.name) / "client.pem"
        key_path.write_text(self.pem)
        pub_path = Path(self.tmp.name) / "client.pub.pem"
        pub_path.write_text(syvault.public_key_pem(serialization.load_pem_private_key(self.pem.encode(), None)))
        for kwargs, want in (
            ({"private_key_path": str(creds_path)}, ["admin-client.json", "from_credentials_file"]),
            ({"private_key": creds}, ["private_key=", "from_credentials_file"]),
            ({"private_key": str(key_path)}, ["private_key_path=", str(key_path)]),
            ({"private_key_path": str(pub_path)}, ["public key", "client.pub.pem"]),
            ({"private_key": "not a key"}, ["sy keygen", "sy client create", "from_credentials_file"]),
        ):
            with self.assertRaises(syvault.ConfigurationError, msg=str(want)) as cm:
                SecretsManagerClient(server="https://v.example.com", client_id=CLIENT_ID, **kwargs)
            for w in want:
                self.assertIn(w, str(cm.exception))
            for line in self.pem.splitlines():
                self.assertNotIn(line, str(cm.exception).replace("-----BEGIN PRIVATE KEY-----", ""))

    def test_missing_key_file(self):
        with self.assertRaises(syvault.ConfigurationError) as cm:
            SecretsManagerClient(server="https://v.example.com", client_id=CLIENT_ID, private_key_path=os.path.join(self.tmp.name, "nope.pem"))
        self.assertIn("nope.pem", str(cm.exception))

    def test_server_url_validation(self):
        for bad in ("", "vault.example.com", "ftp://vault.example.com", "https://", "https://u:p@vault.example.com", "http://h:notaport"):
            with self.assertRaises(syvault.ConfigurationError, msg=bad):
                SecretsManagerClient(server=bad, client_id=CLIENT_ID, private_key=self.pem)
        c = SecretsManagerClient(server=" https://vault.example.com:8443/ ", client_id=CLIENT_ID, private_key=self.pem)
        self.assertEqual(c.server, "https://vault.example.com:8443")

    def test_from_credentials_file_and_env(self):
        path = Path(self.tmp.name) / "admin-client.json"
        path.write_text(json.dumps({"server": "http://127.0.0.1:8200", "client_id": CLIENT_ID, "private_key": self.pem}))
        c = SecretsManagerClient.from_credentials_file(path)
        self.assertEqual((c.server, c.client_id), ("http://127.0.0.1:8200", CLIENT_ID))
        c = SecretsManagerClient.from_env({"SY_SERVER": "https://v.example.com", "SY_CLIENT_ID": CLIENT_ID, "SY_PRIVATE_KEY": self.pem})
        self.assertEqual(c.server, "https://v.example.com")
        c = SecretsManagerClient.from_env({"SY_CREDENTIALS_FILE": str(path)})
        self.assertEqual(c.client_id, CLIENT_ID)
        with self.assertRaises(syvault.ConfigurationError):
            SecretsManagerClient.from_env({"SY_SERVER": "https://v.example.com", "SY_CLIENT_ID": CLIENT_ID})

    def test_client_repr_hides_key(self):
        c = SecretsManagerClient(server="https://v.example.com", client_id=CLIENT_ID, private_key=self.pem)
        self.assertNotIn("PRIVATE", repr(c))


class ErrorMappingTests(unittest.TestCase):
    def test_by_code_and_status(self):
        cases = [
            (400, "invalid_request", syvault.InvalidRequestError),
            (400, "invalid_ttl", syvault.InvalidTTLError),
            (401, "unauthenticated", syvault.AuthenticationError),
            (403, "forbidden", syvault.PermissionDeniedError),
            (404, "not_found", syvault.NotFoundError),
            (409, "conflict", syvault.ConflictError),
            (429, "too_many_leases", syvault.TooManyLeasesError),
            (429, None, syvault.SyVaultError),  # e.g. a proxy's rate limit: not a lease cap
            (413, "too_large", syvault.PayloadTooLargeError),
            (422, "target_unverified", syvault.TargetUnverifiedError),
            (502, "target_unavailable", syvault.TargetUnavailableError),
            (503, "unavailable", syvault.ServiceUnavailableError),
            (504, "timeout", syvault.GatewayTimeoutError),
            (500, "internal", syvault.ServerError),
            (404, None, syvault.NotFoundError),
            (504, "something_new", syvault.GatewayTimeoutError),
            (418, "teapot", syvault.SyVaultError),
            (599, None, syvault.ServerError),
            (404, "invalid_ttl", syvault.NotFoundError),  # never outside the status' family
        ]
        for status, code, cls in cases:
            e = error_from_response(status, code, "What to fix.")
            self.assertIs(type(e), cls, (status, code))
            self.assertIsInstance(e, syvault.SyVaultError)
            self.assertEqual(e.status, status)
            self.assertEqual(e.code, code or "http_error")
            self.assertEqual(e.message, "What to fix.")
            self.assertIn(str(status), str(e))
        self.assertTrue(issubclass(syvault.InvalidTTLError, syvault.InvalidRequestError))
        self.assertFalse(issubclass(syvault.GatewayTimeoutError, TimeoutError))

    def test_connection_error_shape(self):
        e = syvault.SyVaultConnectionError("down")
        self.assertIsNone(e.status)
        self.assertEqual(e.code, "connection_error")
        self.assertIsInstance(e, ConnectionError)
        self.assertIsInstance(e, syvault.SyVaultError)

    def test_pickle_keeps_fields(self):
        import pickle

        e = pickle.loads(pickle.dumps(error_from_response(404, "not_found", "gone")))
        self.assertEqual((type(e), e.status, e.code, e.message), (syvault.NotFoundError, 404, "not_found", "gone"))


class ModelTests(unittest.TestCase):
    LEASE = {
        "lease_id": "0193f5c2-0000-7000-8000-000000000001",
        "username": "vf_tmp_a8f3k2m9",
        "password": "xK9#mP2$qR7wL4nB~abcd",
        "connection_string": "postgresql://vf_tmp_a8f3k2m9:xK9%23mP2%24qR7wL4nB~abcd@db.example.com:5432/myapp",
        "expires_at": "2026-04-06T13:00:00Z",
        "record_uid": "7Kj9mNpQ2xRs",
        "created_at": "2026-04-06T12:00:00Z",
        "engine": "postgresql",
        "host": "db.example.com",
        "port": 5432,
        "database": "myapp",
        "future_field": 1,
    }

    def test_lease_fields_and_times(self):
        lease = syvault.Lease(self.LEASE)
        self.assertEqual(lease.expires_at, "2026-04-06T13:00:00Z")
        self.assertEqual(lease.expires_at_datetime, datetime(2026, 4, 6, 13, 0, tzinfo=timezone.utc))
        self.assertEqual(lease.created_at_datetime.tzinfo, timezone.utc)
        self.assertEqual(lease.port, 5432)
        self.assertEqual(lease.to_dict()["future_field"], 1)
        self.assertEqual(f"Expires at: {lease.expires_at}", "Expires at: 2026-04-06T13:00:00Z")

    def test_lease_repr_masks_secrets(self):
        lease = syvault.Lease(self.LEASE)
        for text in (repr(lease), str(lease), repr([lease])):
            self.assertNotIn(self.LEASE["password"], text)
            self.assertNotIn("xK9%23mP2%24qR7wL4nB", text)
            self.assertNotIn("xK9", text)
            self.assertIn("vf_tmp_a8f3k2m9", text)
            self.assertIn("postgresql://vf_tmp_a8f3k2m9:***@db.example.com:5432/myapp", text)
        self.assertEqual(lease.password, self.LEASE["password"])  # the attribute itself is intact

    def test_parse_time(self):
        self.assertEqual(parse_time("2026-11-26T13:20:47.230210886Z"), datetime(2026, 11, 26, 13, 20, 47, 230210, tzinfo=timezone.utc))
        self.assertEqual(parse_time("2026-11-26T15:20:47+02:00"), datetime(2026, 11, 26, 13, 20, 47, tzinfo=timezone.utc))
        self.assertIsNone(parse_time(None))
        with self.assertRaises(ValueError):
            parse_time("yesterday")

    def test_lease_info(self):
        info = LeaseInfo({"lease_id": "x", "status": "revoked", "expires_at": "2026-04-06T13:00:00Z", "ended_at": "2026-04-06T12:30:00.5Z"})
        self.assertFalse(info.active)
        self.assertEqual(info.ended_at_datetime.microsecond, 500000)
        self.assertIsNone(info.created_at_datetime)
        self.assertLess(info.seconds_left(datetime(2026, 4, 6, 14, tzinfo=timezone.utc)), 0)


class TimeConversionTests(unittest.TestCase):
    """since/until of the audit: datetimes, RFC 3339 strings and timedeltas."""

    NOW = datetime(2026, 4, 6, 12, 0, 0, tzinfo=timezone.utc)

    def test_datetimes(self):
        self.assertEqual(format_time(datetime(2026, 4, 6, 12, 0, tzinfo=timezone.utc)), "2026-04-06T12:00:00Z")
        self.assertEqual(format_time(datetime(2026, 4, 6, 14, 30, tzinfo=timezone(timedelta(hours=2)))), "2026-04-06T12:30:00Z")
        self.assertEqual(format_time(datetime(2026, 4, 6, 5, 0, tzinfo=timezone(timedelta(hours=-7)))), "2026-04-06T12:00:00Z")
        self.assertEqual(format_time(datetime(2026, 4, 6, 12, 0)), "2026-04-06T12:00:00Z")  # naive = UTC
        self.assertEqual(format_time(datetime(2026, 4, 6, 12, 0, 0, 5000)), "2026-04-06T12:00:00.005000Z")
        self.assertEqual(format_time(datetime(2026, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=1)))), "2025-12-31T23:30:00Z")

    def test_timedelta_means_ago(self):
        now = lambda: self.NOW  # noqa: E731
        self.assertEqual(format_time(timedelta(minutes=5), now=now), "2026-04-06T11:55:00Z")
        self.assertEqual(format_time(timedelta(days=1, seconds=1), now=now), "2026-04-05T11:59:59Z")
        self.assertEqual(format_time(timedelta(0), now=now), "2026-04-06T12:00:00Z")
        with self.assertRaises(syvault.InvalidRequestError):
            format_time(timedelta(minutes=-5), "since", now=now)
        # With the real clock: about five minutes ago, in UTC.
        got = parse_time(format_time(timedelta(minutes=5)))
        self.assertAlmostEqual((datetime.now(timezone.utc) - got).total_seconds(), 300, delta=5)
        self.assertEqual(got.tzinfo, timezone.utc)

    def test_strings_pass_through(self):
        for text in ("2026-04-06T12:00:00Z", "2026-04-06T12:00:00.123456789Z", "2026-04-06T14:00:00+02:00"):
            self.assertEqual(format_time(text), text)
        self.assertEqual(format_time(" 2026-04-06t12:00:00z "), "2026-04-06T12:00:00Z")
        self.assertEqual(format_time("2026-04-06 12:00:00Z"), "2026-04-06T12:00:00Z")
        for bad in ("yesterday", "2026-04-06", "2026-04-06T12:00:00", "1775476800", ""):
            with self.assertRaises(syvault.InvalidRequestError, msg=bad) as cm:
                format_time(bad, "until")
            self.assertIn("until", str(cm.exception))
            self.assertIsNone(cm.exception.status)

    def test_other_types(self):
        self.assertIsNone(format_time(None))
        from datetime import date

        for bad in (1775476800, 1.5, date(2026, 4, 6), b"2026-04-06T12:00:00Z"):
            with self.assertRaises(TypeError, msg=repr(bad)):
                format_time(bad)


class KeyPairTests(unittest.TestCase):
    def test_generate_key_pair(self):
        private_pem, public_pem = syvault.generate_key_pair()
        self.assertIsInstance(private_pem, str)
        self.assertIsInstance(public_pem, str)
        self.assertTrue(private_pem.startswith("-----BEGIN PRIVATE KEY-----\n"))
        self.assertTrue(public_pem.startswith("-----BEGIN PUBLIC KEY-----\n"))
        self.assertTrue(public_pem.rstrip().endswith("-----END PUBLIC KEY-----"))
        private = serialization.load_pem_private_key(private_pem.encode(), password=None)
        public = serialization.load_pem_public_key(public_pem.encode())
        self.assertIsInstance(private, Ed25519PrivateKey)
        self.assertIsInstance(public, Ed25519PublicKey)
        message = b"a message signed by the private key"
        public.verify(private.sign(message), message)  # raises InvalidSignature if not the pair
        other_private, other_public = syvault.generate_key_pair()
        self.assertNotEqual(other_private, private_pem)
        self.assertNotEqual(other_public, public_pem)
        with self.assertRaises(InvalidSignature):
            serialization.load_pem_public_key(other_public.encode()).verify(private.sign(message), message)

    def test_private_key_signs_client_assertions(self):
        private_pem, public_pem = syvault.generate_key_pair()
        client = SecretsManagerClient(server="https://v.example.com", client_id=CLIENT_ID, private_key=private_pem)
        parts, header, claims = decode_jwt(client.client_assertion())
        self.assertEqual((header["alg"], claims["sub"]), ("EdDSA", CLIENT_ID))
        serialization.load_pem_public_key(public_pem.encode()).verify(b64url_decode(parts[2]), (parts[0] + "." + parts[1]).encode())

    def test_public_key_pem(self):
        private_pem, public_pem = syvault.generate_key_pair()
        self.assertEqual(syvault.public_key_pem(public_pem), public_pem)
        self.assertEqual(syvault.public_key_pem(public_pem.encode() + b"\n\n"), public_pem)
        key = serialization.load_pem_private_key(private_pem.encode(), password=None)
        self.assertEqual(syvault.public_key_pem(key), public_pem)
        self.assertEqual(syvault.public_key_pem(key.public_key()), public_pem)
        # Private key text is refused without being quoted.
        with self.assertRaises(syvault.ConfigurationError) as cm:
            syvault.public_key_pem(private_pem)
        self.assertNotIn(private_pem.splitlines()[1], str(cm.exception))
        ec_pub = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        for bad in ("", "not a key", ec_pub, "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", 42):
            with self.assertRaises(syvault.ConfigurationError, msg=repr(bad)):
                syvault.public_key_pem(bad)


class SeedSampleTextTests(unittest.TestCase):
    """The sample the integration test runs is the seed's, and the README shows it verbatim."""

    def test_readme_has_the_seed_sample(self):
        from _harness import SEED_PYTHON_SAMPLE

        readme = (_harness.SDK_DIR / "README.md").read_text()
        self.assertIn(SEED_PYTHON_SAMPLE, readme)

    def test_matches_the_seed_document_when_present(self):
        from _harness import SEED_PYTHON_SAMPLE

        path = Path(os.environ.get("SYVAULT_SEED_FILE", "/work/shared/seed/dynamic-secrets.txt"))
        if not path.is_file():
            self.skipTest("seed document not found at %s (set SYVAULT_SEED_FILE)" % path)
        text = path.read_text()
        start = text.index("from syvault import SecretsManagerClient")
        end = text.index("client.dynamic.revoke_lease(lease.lease_id)", start) + len("client.dynamic.revoke_lease(lease.lease_id)")
        self.assertEqual(text[start:end] + "\n", SEED_PYTHON_SAMPLE)


# The transport against a fake server -----------------------------------------------------


class FakeServer:
    """A minimal HTTP server scripted per test: a token endpoint and whatever routes."""

    def __init__(self):
        self.token_calls = 0
        self.token_redirect = None  # an address the token endpoint redirects to
        self.expires_in = 900
        self.routes = {}  # (method, path) -> (status, body or None)
        self.seen = []
        self.release = threading.Event()
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _answer(self, status, body, raw=None, headers=None):
                data = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                path = self.path.split("?", 1)[0]
                with fake.lock:
                    fake.seen.append((self.command, self.path, dict(self.headers), body))
                if path == "/api/sm/v1/auth/token" and fake.token_redirect:
                    self.send_response(307)
                    self.send_header("Location", fake.token_redirect + self.path)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if path == "/api/sm/v1/auth/token":
                    form = urllib.parse.parse_qs(body.decode())
                    assert form["grant_type"] == ["client_credentials"], form
                    assert form["client_assertion_type"] == ["urn:ietf:params:oauth:client-assertion-type:jwt-bearer"]
                    with fake.lock:
                        fake.token_calls += 1
                        n = fake.token_calls
                    time.sleep(0.05)  # widen the window for concurrent callers
                    return self._answer(200, {"access_token": "tok-%d" % n, "token_type": "Bearer", "expires_in": fake.expires_in})
                route = fake.routes.get((self.command, path))
                if route is None:
                    return self._answer(404, {"error": "not_found", "message": "No such endpoint."})
                if route == "hang":
                    fake.release.wait(10)
                    self.close_connection = True
                    return  # the client gave up long ago
                if callable(route):
                    route = route(self)
                    if route is None:
                        return  # it answered itself
                status, payload = route
                if isinstance(payload, bytes):
                    return self._answer(status, None, raw=payload)
                return self._answer(status, payload)

            do_GET = do_POST = do_PUT = do_DELETE = _handle

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = "http://127.0.0.1:%d" % self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


class TransportTests(unittest.TestCase):
    def setUp(self):
        self.fake = FakeServer()
        self.addCleanup(self.fake.close)
        self.key, self.pem = new_key_pem()
        self.client = SecretsManagerClient(server=self.fake.url, client_id=CLIENT_ID, private_key=self.pem, timeout=5)
        self.fake.routes[("GET", "/api/sm/v1/dynamic/leases")] = (200, {"data": []})

    def test_token_cached_and_sent(self):
        self.client.dynamic.list_leases()
        self.client.dynamic.list_leases()
        self.assertEqual(self.fake.token_calls, 1)
        self.assertEqual(self.client.token_requests, 1)
        auths = [h.get("Authorization") for m, p, h, _ in self.fake.seen if p.startswith("/api/sm/v1/dynamic")]
        self.assertEqual(auths, ["Bearer tok-1", "Bearer tok-1"])
        self.assertIs(self.client.get_token(), self.client.get_token())

    def test_token_refreshed_a_minute_before_expiry(self):
        self.client.get_token()
        # 900 s tokens are refreshed 60 s before they expire.
        self.assertAlmostEqual(self.client._token_expires - self.client._token_refresh_at, 60, delta=0.01)
        self.client._token_refresh_at = time.monotonic() - 1  # as if 14 minutes had passed
        self.assertEqual(self.client.get_token(), "tok-2")
        self.assertEqual(self.client.get_token(), "tok-2")
        self.assertEqual(self.fake.token_calls, 2)

    def test_short_token_refreshed_at_half_life(self):
        self.fake.expires_in = 30
        self.client.get_token()
        self.assertAlmostEqual(self.client._token_expires - self.client._token_refresh_at, 15, delta=0.01)

    def test_token_fetch_is_thread_safe(self):
        results, errors = [], []

        def work():
            try:
                results.append(self.client.get_token())
            except Exception as e:  # noqa: BLE001
                errors.append(e)

        threads = [threading.Thread(target=work) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        self.assertEqual(errors, [])
        self.assertEqual(results, ["tok-1"] * 8)
        self.assertEqual(self.fake.token_calls, 1)

    def test_refused_cached_token_is_replaced_once(self):
        calls = []

        def leases(handler):
            calls.append(handler.headers.get("Authorization"))
            if handler.headers.get("Authorization") == "Bearer tok-1" and len(calls) > 1:
                return (401, {"error": "unauthenticated", "message": "The access token is invalid or expired; get a new one."})
            return (200, {"data": []})

        self.fake.routes[("GET", "/api/sm/v1/dynamic/leases")] = leases
        self.client.dynamic.list_leases()
        self.client.dynamic.list_leases()  # tok-1 refused, retried with tok-2
        self.assertEqual(calls, ["Bearer tok-1", "Bearer tok-1", "Bearer tok-2"])
        self.fake.routes[("GET", "/api/sm/v1/dynamic/leases")] = (401, {"error": "unauthenticated", "message": "no"})
        with self.assertRaises(syvault.AuthenticationError):
            self.client.dynamic.list_leases()

    def test_error_answers(self):
        self.fake.routes[("POST", "/api/sm/v1/dynamic/lease")] = (
            403, {"error": "forbidden", "message": 'This client may not lease record "x".'})
        with self.assertRaises(syvault.PermissionDeniedError) as cm:
            self.client.dynamic.create_lease(record_uid="x", ttl_seconds=60)
        e = cm.exception
        self.assertEqual((e.status, e.code), (403, "forbidden"))
        self.assertNotIn("tok-", str(e) + repr(e))
        self.assertNotIn("PRIVATE", str(e) + repr(e))
        # A proxy's HTML error page still maps by status.
        self.fake.routes[("GET", "/api/sm/v1/dynamic/leases")] = (503, b"<html>busy</html>")
        with self.assertRaises(syvault.ServiceUnavailableError) as cm:
            self.client.dynamic.list_leases()
        self.assertEqual(cm.exception.code, "http_error")
        # A 200 that is not JSON is reported, not crashed on.
        self.fake.routes[("GET", "/api/sm/v1/dynamic/leases")] = (200, b"<html>login</html>")
        with self.assertRaises(syvault.SyVaultError) as cm:
            self.client.dynamic.list_leases()
        self.assertEqual(cm.exception.code, "invalid_response")

    def test_redirects_are_not_followed(self):
        # A redirect (a misconfigured proxy, a hostile answer) must not carry the token,
        # the client assertion or the request elsewhere.
        other = FakeServer()
        self.addCleanup(other.close)

        def redirect(handler):
            handler.send_response(307)
            handler.send_header("Location", other.url + handler.path)
            handler.send_header("Content-Length", "0")
            handler.end_headers()

        self.fake.routes[("GET", "/api/sm/v1/dynamic/leases")] = redirect
        self.fake.routes[("POST", "/api/sm/v1/dynamic/lease")] = redirect
        for call in (self.client.dynamic.list_leases, lambda: self.client.dynamic.create_lease(record_uid="x", ttl_seconds=60)):
            with self.assertRaises(syvault.SyVaultConnectionError) as cm:
                call()
            self.assertIn("redirect", str(cm.exception))
            self.assertNotIn("tok-", str(cm.exception))
        self.assertEqual(other.seen, [])
        # Nor the token request itself, whose body is a signed assertion.
        fresh = SecretsManagerClient(server=self.fake.url, client_id=CLIENT_ID, private_key=self.pem, timeout=5)
        self.fake.token_redirect = other.url
        with self.assertRaises(syvault.SyVaultConnectionError):
            fresh.dynamic.list_leases()
        self.assertEqual(other.seen, [])

    def test_request_shapes(self):
        lease = dict(ModelTests.LEASE)
        self.fake.routes[("POST", "/api/sm/v1/dynamic/lease")] = (201, lease)
        self.fake.routes[("DELETE", "/api/sm/v1/dynamic/leases/a%20b%2Fc")] = (204, None)
        self.fake.routes[("DELETE", "/api/sm/v1/dynamic/targets/T1")] = (204, None)
        self.fake.routes[("GET", "/api/sm/v1/dynamic/leases")] = (200, {"data": [{"lease_id": "l1"}], "next_cursor": "abc"})
        got = self.client.dynamic.create_lease(record_uid="7Kj9mNpQ2xRs", ttl_seconds=3600)
        self.assertEqual(got.lease_id, lease["lease_id"])
        self.assertIsNone(self.client.dynamic.revoke_lease("a b/c"))
        page = self.client.dynamic.list_leases(record_uid="R 1", limit=5, cursor="c/1")
        self.assertEqual((len(page), page.next_cursor, page[0].lease_id), (1, "abc", "l1"))
        self.client.dynamic.delete_target("T1", revoke_leases=True)
        reqs = [(m, p, b) for m, p, h, b in self.fake.seen if not p.endswith("/auth/token")]
        self.assertEqual(reqs[0], ("POST", "/api/sm/v1/dynamic/lease", b'{"record_uid": "7Kj9mNpQ2xRs", "ttl_seconds": 3600}'))
        self.assertEqual(reqs[1][:2], ("DELETE", "/api/sm/v1/dynamic/leases/a%20b%2Fc"))
        self.assertEqual(reqs[2][1], "/api/sm/v1/dynamic/leases?record_uid=R+1&limit=5&cursor=c%2F1")
        self.assertEqual(reqs[3][1], "/api/sm/v1/dynamic/targets/T1?revoke_leases=true")
        with self.assertRaises(syvault.InvalidRequestError):
            self.client.dynamic.revoke_lease("")

    def test_iter_leases_follows_cursors(self):
        pages = {
            None: {"data": [{"lease_id": "1"}, {"lease_id": "2"}], "next_cursor": "c1"},
            "c1": {"data": [{"lease_id": "3"}], "next_cursor": "c2"},
            "c2": {"data": []},
        }

        def leases(handler):
            q = urllib.parse.parse_qs(urllib.parse.urlsplit(handler.path).query)
            self.assertEqual(q.get("limit"), ["2"])
            return (200, pages[q.get("cursor", [None])[0]])

        self.fake.routes[("GET", "/api/sm/v1/dynamic/leases")] = leases
        self.assertEqual([l.lease_id for l in self.client.dynamic.iter_leases(page_size=2)], ["1", "2", "3"])

    def test_clients_requests(self):
        view = {"client_id": "11111111-2222-3333-4444-555555555555", "name": "billing", "role": "app",
                "allowed_records": ["7Kj9mNpQ2xRs"], "max_ttl_seconds": 3600, "max_leases": 20, "public_key": "PEM",
                "created_at": "2026-04-06T12:00:00Z"}
        self.fake.routes[("POST", "/api/sm/v1/clients")] = (201, view)
        self.fake.routes[("GET", "/api/sm/v1/clients")] = (200, {"data": [view, dict(view, client_id="a", role="admin", allowed_records=[])]})
        self.fake.routes[("GET", "/api/sm/v1/clients/a%2Fb")] = (200, view)
        self.fake.routes[("DELETE", "/api/sm/v1/clients/" + view["client_id"])] = (204, None)
        private_pem, public_pem = syvault.generate_key_pair()
        info = self.client.clients.create(name="billing", public_key=public_pem, allowed_records=("7Kj9mNpQ2xRs",), max_ttl_seconds=3600,
                                          max_leases=20)
        self.assertIsInstance(info, syvault.ClientInfo)
        self.assertEqual((info.client_id, info.role, info.allowed_records, info.max_ttl_seconds, info.max_leases),
                         (view["client_id"], "app", ["7Kj9mNpQ2xRs"], 3600, 20))
        self.assertEqual(info.created_at_datetime, datetime(2026, 4, 6, 12, tzinfo=timezone.utc))
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "app.pub")
            with open(path, "w") as f:
                f.write(public_pem)
            self.client.clients.create(name="ops", public_key_path=path, role="admin")
        listed = self.client.clients.list()
        self.assertEqual([(c.client_id, c.is_admin) for c in listed], [(view["client_id"], False), ("a", True)])
        self.assertEqual(self.client.clients.get("a/b").name, "billing")
        self.assertIsNone(self.client.clients.delete(view["client_id"]))
        reqs = [(m, p, b) for m, p, h, b in self.fake.seen if not p.endswith("/auth/token")]
        self.assertEqual(json.loads(reqs[0][2]), {"name": "billing", "public_key": public_pem, "role": "app",
                                                  "allowed_records": ["7Kj9mNpQ2xRs"], "max_ttl_seconds": 3600,
                                                  "max_leases": 20})
        self.assertEqual(json.loads(reqs[1][2]), {"name": "ops", "public_key": public_pem, "role": "admin", "allowed_records": []})
        self.assertEqual([(m, p) for m, p, b in reqs[2:]], [
            ("GET", "/api/sm/v1/clients"), ("GET", "/api/sm/v1/clients/a%2Fb"), ("DELETE", "/api/sm/v1/clients/" + view["client_id"])])
        self.assertNotIn("-----END PUBLIC KEY-----", repr(info))

    def test_update_client_changes_only_what_is_given(self):
        cid = "11111111-2222-3333-4444-555555555555"
        view = {"client_id": cid, "name": "billing", "role": "app", "allowed_records": ["7Kj9mNpQ2xRs"], "max_ttl_seconds": 3600,
                "max_leases": 20, "public_key": "PEM", "created_at": "2026-04-06T12:00:00Z"}
        self.fake.routes[("GET", "/api/sm/v1/clients/" + cid)] = (200, view)
        self.fake.routes[("PUT", "/api/sm/v1/clients/" + cid)] = (200, dict(view, allowed_records=["Other0000000"]))
        info = self.client.clients.update(cid, allowed_records=["Other0000000"], max_leases=0)
        self.assertEqual(info.allowed_records, ["Other0000000"])
        reqs = [(m, p, b) for m, p, h, b in self.fake.seen if not p.endswith("/auth/token")]
        self.assertEqual([(m, p) for m, p, b in reqs], [("GET", "/api/sm/v1/clients/" + cid), ("PUT", "/api/sm/v1/clients/" + cid)])
        self.assertEqual(json.loads(reqs[1][2]), {"name": "billing", "public_key": "PEM", "role": "app",
                                                  "allowed_records": ["Other0000000"], "max_ttl_seconds": 3600})
        private_pem, public_pem = syvault.generate_key_pair()
        with self.assertRaises(syvault.ConfigurationError):
            self.client.clients.update(cid, public_key=private_pem)
        with self.assertRaises(syvault.ConfigurationError):
            self.client.clients.update(cid, public_key=public_pem, public_key_path="x.pub")
        self.assertEqual(len([r for r in self.fake.seen if not r[1].endswith("/auth/token")]), 2, "nothing sent for a refused key")

    def test_rate_limited_carries_retry_after(self):
        self.fake.routes[("POST", "/api/sm/v1/dynamic/lease")] = lambda h: h._answer(
            429, {"error": "rate_limited", "message": "Too fast; retry after 7 s."}, headers={"Retry-After": "7"})
        with self.assertRaises(syvault.RateLimitedError) as cm:
            self.client.dynamic.create_lease(record_uid="7Kj9mNpQ2xRs", ttl_seconds=60)
        self.assertEqual((cm.exception.status, cm.exception.code, cm.exception.retry_after), (429, "rate_limited", 7))
        self.assertNotIsInstance(cm.exception, syvault.TooManyLeasesError)

    def test_update_client_is_made_again_on_a_changed_client(self):
        # Sent on the version read (If-Match); when another admin changed the client in
        # between (412), it is read again and the arguments applied to what it then holds.
        cid = "11111111-2222-3333-4444-555555555555"
        state = {"version": 7, "view": {"client_id": cid, "name": "billing", "role": "app", "allowed_records": ["7Kj9mNpQ2xRs"],
                                        "public_key": "PEM", "created_at": "2026-04-06T12:00:00Z"}}
        puts = []

        def etag():
            return '"%d"' % state["version"]

        def get(h):
            h._answer(200, state["view"], headers={"ETag": etag()})

        def put(h):
            puts.append(h.headers.get("If-Match"))
            if len(puts) == 1:  # another admin renames it after this read
                state["view"] = dict(state["view"], name="billing-renamed")
                state["version"] += 1
            if h.headers.get("If-Match") != etag():
                return 412, {"error": "precondition_failed", "message": "The client changed; read it again."}
            body = json.loads(self.fake.seen[-1][3])
            state["view"] = dict(state["view"], **body)
            state["version"] += 1
            h._answer(200, state["view"], headers={"ETag": etag()})

        self.fake.routes[("GET", "/api/sm/v1/clients/" + cid)] = get
        self.fake.routes[("PUT", "/api/sm/v1/clients/" + cid)] = put
        info = self.client.clients.update(cid, max_leases=9)
        self.assertEqual(puts, ['"7"', '"8"'])
        self.assertEqual((info.name, info.max_leases, info.etag), ("billing-renamed", 9, '"9"'))
        # A client that keeps changing: three attempts, then the refusal.
        puts.clear()
        self.fake.routes[("PUT", "/api/sm/v1/clients/" + cid)] = lambda h: (
            puts.append(h.headers.get("If-Match")), (412, {"error": "precondition_failed", "message": "changed"}))[1]
        with self.assertRaises(syvault.PreconditionFailedError) as cm:
            self.client.clients.update(cid, max_leases=10)
        self.assertNotIsInstance(cm.exception, syvault.ConflictError)  # resending it cannot succeed
        self.assertEqual((cm.exception.status, cm.exception.code, len(puts)), (412, "precondition_failed", 3))

    def test_create_client_refuses_bad_keys_before_sending(self):
        private_pem, public_pem = syvault.generate_key_pair()
        for kwargs in ({"public_key": private_pem}, {}, {"public_key": public_pem, "public_key_path": "/x"},
                       {"public_key_path": "/nonexistent/app.pub"}, {"public_key": "garbage"}):
            with self.assertRaises(syvault.ConfigurationError, msg=list(kwargs)) as cm:
                self.client.clients.create(name="x", **kwargs)
            self.assertNotIn(private_pem.splitlines()[1], str(cm.exception))
        with self.assertRaises(TypeError):
            self.client.clients.create(name="x", public_key=public_pem, allowed_records="7Kj9mNpQ2xRs")
        self.assertEqual(self.fake.seen, [])  # nothing was sent, not even a token request
        with self.assertRaises(syvault.InvalidRequestError):
            self.client.clients.get("")

    def test_audit_query(self):
        event = {"seq": 7, "time": "2026-04-06T12:00:00.123456789Z", "type": "lease.requested", "client_id": "c",
                 "record_uid": "R", "lease_id": "L", "ttl_seconds": 60, "expires_at": "2026-04-06T12:01:00Z", "username": "vf_tmp_x"}
        self.fake.routes[("GET", "/api/sm/v1/audit")] = (200, {"data": [event], "next_cursor": "7"})
        page = self.client.audit.list(since=datetime(2026, 4, 6, 14, tzinfo=timezone(timedelta(hours=2))), until="2026-04-06T13:00:00Z",
                                      record_uid="R", lease_id="L", client_id="c", limit=10, cursor="3")
        self.assertIsInstance(page, syvault.AuditPage)
        self.assertEqual((len(page), page.next_cursor, page.has_more), (1, "7", True))
        e = page[0]
        self.assertIsInstance(e, syvault.AuditEvent)
        self.assertEqual((e.seq, e.type, e.client_id, e.lease_id, e.ttl_seconds, e.username, e.action), (7, "lease.requested", "c", "L", 60, "vf_tmp_x", None))
        self.assertEqual(e.time_datetime, datetime(2026, 4, 6, 12, 0, 0, 123456, tzinfo=timezone.utc))
        self.assertEqual(e.expires_at_datetime, datetime(2026, 4, 6, 12, 1, tzinfo=timezone.utc))
        self.client.audit.list()
        paths = [p for m, p, h, b in self.fake.seen if p.startswith("/api/sm/v1/audit")]
        q = urllib.parse.parse_qs(urllib.parse.urlsplit(paths[0]).query)
        self.assertEqual(q, {"since": ["2026-04-06T12:00:00Z"], "until": ["2026-04-06T13:00:00Z"], "record_uid": ["R"],
                             "lease_id": ["L"], "client_id": ["c"], "limit": ["10"], "cursor": ["3"]})
        self.assertEqual(paths[1], "/api/sm/v1/audit")
        with self.assertRaises(syvault.InvalidRequestError):
            self.client.audit.list(since="last week")

    def test_audit_iter_follows_cursors_with_a_fixed_window(self):
        pages = {
            None: {"data": [{"seq": 1, "time": "t", "type": "a"}, {"seq": 2, "time": "t", "type": "b"}], "next_cursor": "2"},
            "2": {"data": [], "next_cursor": "9"},  # a page can be empty yet not the last (bounded scan)
            "9": {"data": [{"seq": 10, "time": "t", "type": "c"}]},
        }
        seen = []

        def audit(handler):
            q = urllib.parse.parse_qs(urllib.parse.urlsplit(handler.path).query)
            seen.append(q)
            return (200, pages[q.get("cursor", [None])[0]])

        self.fake.routes[("GET", "/api/sm/v1/audit")] = audit
        it = self.client.audit.iter(since=timedelta(hours=1), record_uid="R", limit=2)
        self.assertEqual(seen, [])  # lazy
        self.assertEqual([e.seq for e in it], [1, 2, 10])
        self.assertEqual([q.get("cursor") for q in seen], [None, ["2"], ["9"]])
        self.assertEqual(len({q["since"][0] for q in seen}), 1, "the window does not slide between pages")
        self.assertTrue(all(q["record_uid"] == ["R"] and q["limit"] == ["2"] for q in seen))
        with self.assertRaises(syvault.InvalidRequestError):
            self.client.audit.iter(since=timedelta(minutes=-1))  # checked at once, not at the first next()
        # A cursor that does not move ends the iteration instead of looping.
        self.fake.routes[("GET", "/api/sm/v1/audit")] = (200, {"data": [{"seq": 3, "time": "t", "type": "a"}], "next_cursor": "5"})
        self.assertEqual([e.seq for e in self.client.audit.iter(cursor="5")], [3])

    def test_update_target_puts_the_full_body(self):
        target = {"record_uid": "T1", "name": "db", "engine": "postgresql"}
        self.fake.routes[("PUT", "/api/sm/v1/dynamic/targets/T%2F1")] = (200, target)
        body = {"name": "db", "engine": "postgresql", "host": "h", "port": 5432, "database": "d",
                "admin_username": "a", "admin_password": "old", "grants": []}
        got = self.client.dynamic.update_target("T/1", body, admin_password="new")
        self.assertIsInstance(got, syvault.Target)
        self.assertEqual(got.record_uid, "T1")
        self.assertEqual(body["admin_password"], "old")  # the caller's mapping is not changed
        m, p, h, b = [r for r in self.fake.seen if r[0] == "PUT"][0]
        self.assertEqual(p, "/api/sm/v1/dynamic/targets/T%2F1")
        self.assertEqual(h.get("Content-Type"), "application/json")
        self.assertEqual(json.loads(b), dict(body, admin_password="new"))

    def test_read_timeout_is_a_connection_error(self):
        self.fake.routes[("DELETE", "/api/sm/v1/dynamic/leases/slow")] = "hang"
        slow = SecretsManagerClient(server=self.fake.url, client_id=CLIENT_ID, private_key=self.pem, timeout=0.5)
        with self.assertRaises(syvault.SyVaultConnectionError) as cm:
            slow.dynamic.revoke_lease("slow")
        self.assertIsNone(cm.exception.status)
        self.assertEqual(cm.exception.code, "connection_error")


class UnreachableTests(unittest.TestCase):
    def test_refused_connection(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]  # bound but not listening: connections are refused
            _, pem = new_key_pem()
            c = SecretsManagerClient(server="http://127.0.0.1:%d" % port, client_id=CLIENT_ID, private_key=pem, timeout=5)
            with self.assertRaises(syvault.SyVaultConnectionError) as cm:
                c.dynamic.list_leases()
        e = cm.exception
        self.assertIsNone(e.status)
        self.assertEqual(e.code, "connection_error")
        self.assertIn("127.0.0.1:%d" % port, str(e))
        self.assertNotIn("PRIVATE", str(e))



# Keeping a lease fresh ------------------------------------------------------------------


class KeeperScheduleTests(unittest.TestCase):
    """The schedule of LeaseKeeper, the same as sy agent's (cmd/sy/cli/agent_schedule_test.go)."""

    def test_renewal_delay(self):
        self.assertAlmostEqual(renewal_delay(3 * 3600, 0), 2 * 3600)
        self.assertAlmostEqual(renewal_delay(3 * 3600, 0.5), 2 * 3600 - 9 * 60)
        self.assertAlmostEqual(renewal_delay(3, 0), 2)
        self.assertEqual(renewal_delay(-1, 0.3), 0)
        self.assertEqual(renewal_delay(0, 0), 0)
        for j in (0, 0.25, 0.5, 0.999):
            self.assertTrue(0.56 * 3600 <= renewal_delay(3600, j) <= 3600 * 2 / 3, j)

    def test_renewal_capped(self):
        e = datetime(2026, 4, 6, 13, 0, 0, tzinfo=timezone.utc)
        cases = [
            ("moved as far as the time passed", e + timedelta(minutes=40), 2400, False),
            ("moved further", e + timedelta(minutes=41), 2400, False),
            ("a truncated second short", e + timedelta(minutes=40, milliseconds=-999), 2400, False),
            ("a whole second short", e + timedelta(minutes=40, seconds=-1), 2400, True),
            ("held at the cap", e, 2400, True),
            ("moved, but to the cap", e + timedelta(minutes=20), 2400, True),
            ("short lease moved", e + timedelta(seconds=2), 2.6, False),
            ("short lease held", e, 2, True),
            ("renewed at once", e, 0.1, False),
        ]
        for name, after, elapsed, want in cases:
            self.assertEqual(renewal_capped(e, after, elapsed), want, name)

    def test_retry_delay(self):
        cases = [
            (1, 0, 0.5, 0.5), (2, 0, 0.5, 1.0), (4, 0, 0.5, 4.0), (50, 0, 0.5, 30.0),
            (1, 0, 0, 0.4), (50, 0, 1, 36.0),
            (50, 10, 0.5, 5.0), (50, 0.4, 0.5, 0.25), (50, 0.1, 0.5, 0.1), (1, 3600, 0.5, 0.5),
        ]
        for failures, left, jitter, want in cases:
            self.assertAlmostEqual(retry_delay(failures, left, jitter), want, msg=(failures, left, jitter))

    def test_renews_then_rotates_with_a_third_left(self):
        """Against a server that answers in whole seconds and caps renewals, whatever the
        phase, latency and jitter: renewals while they help, the cap seen only when it is
        there, and a rotation that starts with a third of a lease (less rounding) left."""
        base = datetime(2026, 4, 6, 12, 0, 0, tzinfo=timezone.utc)

        def trunc(t):
            return t.replace(microsecond=0)

        for ttl, limit, min_renewals in ((4, 6, 1), (3, 6, 1), (15, 60, 3), (3600, 86400, 30), (86400, 86400, 0)):
            for phase in (0, 0.3, 0.95):
                for latency in (0.001, 0.08):
                    for jitter in (0, 0.5, 0.99):
                        start = base + timedelta(seconds=phase)
                        created = trunc(start)
                        cap = created + timedelta(seconds=min(limit, 86400))
                        exp = created + timedelta(seconds=ttl)
                        answered = start + timedelta(seconds=latency)
                        renewals = 0
                        while True:
                            sent = answered + timedelta(seconds=renewal_delay((exp - answered).total_seconds(), jitter))
                            self.assertLess(sent, exp)
                            nxt = min(trunc(sent + timedelta(seconds=latency / 2 + ttl)), cap)
                            recv = sent + timedelta(seconds=latency)
                            if renewal_capped(exp, nxt, (sent - answered).total_seconds()):
                                self.assertEqual(nxt, cap)
                                break
                            exp, answered, renewals = nxt, recv, renewals + 1
                        where = (ttl, limit, phase, latency, jitter)
                        self.assertGreaterEqual(renewals, min_renewals, where)
                        self.assertGreaterEqual((nxt - recv).total_seconds(), (ttl - 2) / 3, where)


def _lease_body(lease_id, username, ttl):
    now = datetime.now(timezone.utc).replace(microsecond=0)
    return {
        "lease_id": lease_id, "username": username, "password": "pw-%s-#secret!" % lease_id,
        "connection_string": "postgresql://%s:pw-%s-%%23secret%%21@db:5432/app" % (username, lease_id),
        "expires_at": format_time(now + timedelta(seconds=ttl)), "created_at": format_time(now),
        "record_uid": "7Kj9mNpQ2xRs",
    }


class KeeperTests(unittest.TestCase):
    """LeaseKeeper's flow against a fake server answering as the API does."""

    def setUp(self):
        self.fake = FakeServer()
        self.addCleanup(self.fake.close)
        _, pem = new_key_pem()
        self.client = SecretsManagerClient(server=self.fake.url, client_id=CLIENT_ID, private_key=pem, timeout=5)
        self.leases = []  # what the fake handed out

    def serve_leases(self, ttl, after=None):
        """Create answers a new lease each time; after the first len(...) ones, ``after``."""
        def create(handler):
            with self.fake.lock:
                if after is not None and self.leases:
                    return after
                body = _lease_body("lease-%d" % (len(self.leases) + 1), "vf_tmp_%08d" % len(self.leases), ttl)
                self.leases.append(body)
            return (201, body)
        self.fake.routes[("POST", "/api/sm/v1/dynamic/lease")] = create

    def requests(self, method, prefix):
        with self.fake.lock:
            return [p for m, p, _, _ in self.fake.seen if m == method and p.startswith(prefix)]

    def assert_no_secret(self, text):
        for body in self.leases:
            self.assertNotIn(body["password"], text)
            self.assertNotIn(body["connection_string"], text)

    def test_rotates_at_the_cap_and_revokes_after_grace(self):
        self.serve_leases(3)

        def renew(handler):  # held at the cap: expires_at does not move
            lease_id = handler.path.split("/")[-2]
            body = next(b for b in self.leases if b["lease_id"] == lease_id)
            return (200, {k: body[k] for k in ("lease_id", "username", "expires_at", "created_at", "record_uid")})
        for n in (1, 2, 3):
            self.fake.routes[("POST", "/api/sm/v1/dynamic/leases/lease-%d/renew" % n)] = renew
            self.fake.routes[("DELETE", "/api/sm/v1/dynamic/leases/lease-%d" % n)] = (204, None)
        got, rotated, on_rotate = _harness.recorder()
        with self.assertLogs("syvault", level="INFO") as logs:
            with self.client.dynamic.keep_fresh(record_uid="7Kj9mNpQ2xRs", ttl_seconds=3, on_rotate=on_rotate,
                                                grace_seconds=0.2) as keeper:
                self.assertEqual(keeper.lease.lease_id, "lease-1")
                self.assertTrue(rotated.wait(10), "no rotation")
                self.assertEqual(got[0].lease_id, "lease-2")
                self.assertEqual(got[0].password, self.leases[1]["password"])
                self.assertIn(keeper.lease.lease_id, ("lease-2", "lease-3"))
                _harness.wait_for(lambda: "/api/sm/v1/dynamic/leases/lease-1" in self.requests("DELETE", "/api/sm/v1/dynamic/leases/"),
                                  10, "the old lease revoked")
            current = keeper.lease.lease_id
        self.assertIn("/api/sm/v1/dynamic/leases/" + current, self.requests("DELETE", "/api/sm/v1/dynamic/leases/"))
        text = "\n".join(logs.output)
        self.assertIn("lease renewed lease_id=lease-1", text)
        self.assertIn("at_cap=True", text)
        self.assertIn("lease rotated old_lease_id=lease-1 lease_id=lease-2", text)
        rotated_at = next(r.created for r in logs.records if r.getMessage().startswith("lease rotated old_lease_id=lease-1"))
        revoked_at = next(r.created for r in logs.records if r.getMessage() == "lease revoked lease_id=lease-1")
        self.assertGreaterEqual(revoked_at - rotated_at, 0.2)
        self.assert_no_secret(text)

    def test_rotation_waits_out_a_rate_limit(self):
        # The lease ends (revoked with the rest of a fleet's): its replacement, refused by
        # the server's client rate limit, is asked for again when the server says.
        limited = [1]

        def create(handler):
            with self.fake.lock:
                if self.leases and limited[0]:
                    limited[0] -= 1
                    refuse = True
                else:
                    refuse = False
                    ttl = 60 if self.leases else 3  # the first ends at its first renewal
                    body = _lease_body("lease-%d" % (len(self.leases) + 1), "vf_tmp_%08d" % len(self.leases), ttl)
                    self.leases.append(body)
            if refuse:
                handler._answer(429, {"error": "rate_limited", "message": "Too fast."}, headers={"Retry-After": "1"})
                return None
            return (201, body)
        self.fake.routes[("POST", "/api/sm/v1/dynamic/lease")] = create
        self.fake.routes[("POST", "/api/sm/v1/dynamic/leases/lease-1/renew")] = (404, {"error": "not_found", "message": "No lease."})
        self.fake.routes[("DELETE", "/api/sm/v1/dynamic/leases/lease-2")] = (204, None)
        got, rotated, on_rotate = _harness.recorder()
        errors, failed, on_error = _harness.recorder()
        with self.assertLogs("syvault", level="INFO") as logs:
            with self.client.dynamic.keep_fresh(record_uid="7Kj9mNpQ2xRs", ttl_seconds=3, on_rotate=on_rotate,
                                                on_error=on_error, grace_seconds=0.1) as keeper:
                self.assertTrue(rotated.wait(15), "no rotation: %s" % errors)
                self.assertEqual(keeper.lease.lease_id, "lease-2")
        self.assertEqual(errors, [])
        self.assertIn("rate limited; asking again op=rotate lease_id=lease-1", "\n".join(logs.output))
        creates = [p for p in self.requests("POST", "/api/sm/v1/dynamic/lease") if p == "/api/sm/v1/dynamic/lease"]
        self.assertEqual(len(creates), 3)  # the first lease, the refusal, its replacement

    def rate_limited_renewal(self, ttl, retry_after):
        """The times of lease-1's renewals, the first refused by the client rate limit
        with ``retry_after``, once there have been two."""
        self.serve_leases(ttl)
        renewals = []

        def renew(handler):
            with self.fake.lock:
                renewals.append(time.monotonic())
                refuse = len(renewals) == 1
            if refuse:
                handler._answer(429, {"error": "rate_limited", "message": "Too fast."}, headers={"Retry-After": str(retry_after)})
                return None
            now = datetime.now(timezone.utc).replace(microsecond=0)
            body = dict(self.leases[0], expires_at=format_time(now + timedelta(seconds=60)))
            return (200, {k: body[k] for k in ("lease_id", "username", "expires_at", "created_at", "record_uid")})
        self.fake.routes[("POST", "/api/sm/v1/dynamic/leases/lease-1/renew")] = renew
        self.fake.routes[("DELETE", "/api/sm/v1/dynamic/leases/lease-1")] = (204, None)
        with self.assertLogs("syvault", level="INFO") as logs:
            with self.client.dynamic.keep_fresh(record_uid="7Kj9mNpQ2xRs", ttl_seconds=ttl, grace_seconds=0.1):
                _harness.wait_for(lambda: len(renewals) >= 2, 20, "a second renewal")
        self.assertIn("lease renewed lease_id=lease-1", "\n".join(logs.output))
        return renewals

    def test_renewal_waits_out_a_rate_limit(self):
        # A renewal refused by the server's client rate limit is tried again when the
        # server says, not on the keeper's own backoff (half a second after a first
        # failure), which the server would refuse too.
        renewals = self.rate_limited_renewal(12, 1)  # renewed with 3-4.8 s left
        self.assertGreaterEqual(renewals[1] - renewals[0], 1.0)

    def test_renewal_not_past_the_expiry_for_a_rate_limit(self):
        # A Retry-After past the credentials' expiry: the next attempt comes at half the
        # time left, and more may follow before the expiry.
        renewals = self.rate_limited_renewal(6, 30)  # renewed with 1-2.4 s left
        self.assertLess(renewals[1] - renewals[0], 2.0)

    def test_renewal_not_past_half_the_time_left_for_a_rate_limit(self):
        # A Retry-After before the expiry but past half the time left: waiting it out
        # would leave no room for another attempt, so the next comes at that half.
        with unittest.mock.patch("syvault.keeper.random.random", return_value=0.0):
            renewals = self.rate_limited_renewal(12, 3)  # renewed with 3.7-4 s left
        self.assertGreater(renewals[1] - renewals[0], 1.5)
        self.assertLess(renewals[1] - renewals[0], 2.8)

    def test_gives_up_once_the_credentials_expire(self):
        self.serve_leases(2, after=(503, {"error": "unavailable", "message": "The event store is unavailable."}))
        self.fake.routes[("POST", "/api/sm/v1/dynamic/leases/lease-1/renew")] = (
            503, {"error": "unavailable", "message": "The event store is unavailable."})
        errors, failed, on_error = _harness.recorder()
        with self.assertLogs("syvault", level="INFO") as logs:
            keeper = self.client.dynamic.keep_fresh(record_uid="7Kj9mNpQ2xRs", ttl_seconds=2, grace_seconds=0.1, on_error=on_error)
            self.assertTrue(failed.wait(10), "the keeper did not give up")
        self.assertEqual(errors[0].code, "lease_expired")
        self.assertIs(keeper.error, errors[0])
        with self.assertRaises(syvault.SyVaultError) as cm:
            keeper.lease
        self.assertIn("lease-1 expired at", str(cm.exception))
        keeper.close()  # nothing valid left to revoke
        self.assertEqual(self.requests("DELETE", "/api/sm/v1/dynamic/leases/"), [])
        text = "\n".join(logs.output)
        self.assertIn("retrying op=renew lease_id=lease-1", text)
        self.assertIn("credentials_valid_until=", text)
        self.assert_no_secret(text)

    def test_arguments_checked_before_any_request(self):
        for ttl, grace in ((0, None), ("60", None), (60, 20), (60, -1)):
            with self.assertRaises(syvault.ConfigurationError, msg=(ttl, grace)):
                self.client.dynamic.keep_fresh(record_uid="7Kj9mNpQ2xRs", ttl_seconds=ttl, grace_seconds=grace)
        self.assertEqual(self.fake.seen, [])

    def test_first_lease_errors_raise(self):
        self.fake.routes[("POST", "/api/sm/v1/dynamic/lease")] = (403, {"error": "forbidden", "message": "Not allowed."})
        with self.assertRaises(syvault.PermissionDeniedError):
            self.client.dynamic.keep_fresh(record_uid="7Kj9mNpQ2xRs", ttl_seconds=60)


if __name__ == "__main__":
    unittest.main()
