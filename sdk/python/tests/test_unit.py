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
import urllib.parse
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import _harness  # noqa: F401  (puts the SDK first on sys.path)

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import syvault
from syvault import SecretsManagerClient
from syvault._auth import b64url_decode
from syvault.errors import error_from_response
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

            def _answer(self, status, body, raw=None):
                data = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
                self.send_response(status)
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
                status, payload = route
                if isinstance(payload, bytes):
                    return self._answer(status, None, raw=payload)
                return self._answer(status, payload)

            do_GET = do_POST = do_DELETE = _handle

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


if __name__ == "__main__":
    unittest.main()
