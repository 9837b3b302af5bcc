"""End-to-end tests against a real SyVault server built from this repository and the local
PostgreSQL (127.0.0.1:5432, superuser postgres).

Without Go, psql, PostgreSQL or psycopg2 these tests skip with the reason; with CI=true
they fail instead.
"""

import contextlib
import io
import re
import socket
import unittest
import uuid

import _harness
from _harness import ident, psql, role_exists, scratch_name

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import syvault
from syvault import SecretsManagerClient

from _harness import SEED_PYTHON_SAMPLE  # noqa: E402

SERVER = None  # the _harness.Server of this module


def setUpModule():
    global SERVER
    server = _harness.Server()
    try:
        server.start()
    except BaseException:
        server.stop()
        raise
    SERVER = server


def tearDownModule():
    global SERVER
    if SERVER is not None:
        SERVER.stop()
        SERVER = None


def new_client(**kwargs):
    """A fresh client as the dev server's admin, configured like the seed's sample."""
    args = dict(server=SERVER.url, client_id=SERVER.client_id, private_key_path=str(SERVER.key_path))
    args.update(kwargs)
    return SecretsManagerClient(**args)


class ServerTests(unittest.TestCase):
    """Against the server alone (no database needed)."""

    def test_admin_credentials_shape(self):
        self.assertRegex(SERVER.url, r"^http://127\.0\.0\.1:\d+$")
        self.assertEqual(SERVER.key_path.stat().st_mode & 0o777, 0o600)

    def test_token_is_cached(self):
        client = new_client()
        self.assertEqual(client.token_requests, 0)
        client.dynamic.list_leases()
        client.dynamic.list_leases()
        client.dynamic.list_targets()
        self.assertEqual(client.token_requests, 1)
        first = client.get_token()
        self.assertIs(client.get_token(), first)
        self.assertEqual(client.token_requests, 1)
        self.assertIsNot(client.get_token(force_refresh=True), first)
        self.assertEqual(client.token_requests, 2)

    def test_private_key_text_works_too(self):
        client = SecretsManagerClient(server=SERVER.url, client_id=SERVER.client_id, private_key=SERVER.private_key)
        self.assertIsInstance(client.dynamic.list_targets(), list)

    def test_unknown_record_is_not_found(self):
        with self.assertRaises(syvault.NotFoundError) as cm:
            new_client().dynamic.create_lease(record_uid="NoSuchRecord", ttl_seconds=60)
        self.assertEqual(cm.exception.status, 404)
        self.assertEqual(cm.exception.code, "not_found")
        self.assertTrue(cm.exception.message)

    def test_ttl_zero_is_invalid_ttl(self):
        for ttl in (0, 86401):
            with self.assertRaises(syvault.InvalidRequestError) as cm:
                new_client().dynamic.create_lease(record_uid="NoSuchRecord", ttl_seconds=ttl)
            self.assertIsInstance(cm.exception, syvault.InvalidTTLError)
            self.assertEqual(cm.exception.status, 400)
            self.assertEqual(cm.exception.code, "invalid_ttl")

    def test_wrong_client_id_is_unauthenticated(self):
        client = new_client(client_id=str(uuid.uuid4()))
        with self.assertRaises(syvault.AuthenticationError) as cm:
            client.dynamic.list_leases()
        e = cm.exception
        self.assertEqual((e.status, e.code), (401, "unauthenticated"))
        self.assertNotIn("PRIVATE KEY", str(e))

    def test_wrong_key_is_unauthenticated(self):
        other = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        client = SecretsManagerClient(server=SERVER.url, client_id=SERVER.client_id, private_key=other)
        with self.assertRaises(syvault.AuthenticationError):
            client.get_token()

    def test_replayed_assertion_is_refused(self):
        import json
        import urllib.error
        import urllib.parse
        import urllib.request

        assertion = new_client().client_assertion()
        form = urllib.parse.urlencode({
            "grant_type": "client_credentials",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": assertion,
        }).encode()
        url = SERVER.url + "/api/sm/v1/auth/token"
        with urllib.request.urlopen(urllib.request.Request(url, data=form), timeout=10) as resp:
            self.assertEqual(json.load(resp)["token_type"], "Bearer")
        with self.assertRaises(urllib.error.HTTPError) as cm:
            urllib.request.urlopen(urllib.request.Request(url, data=form), timeout=10)
        self.assertEqual(cm.exception.code, 401)
        cm.exception.close()

    def test_unreachable_server_is_a_connection_error(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            url = "http://127.0.0.1:%d" % s.getsockname()[1]
            client = new_client(server=url, timeout=5)
            with self.assertRaises(syvault.SyVaultConnectionError) as cm:
                client.dynamic.create_lease(record_uid="7Kj9mNpQ2xRs", ttl_seconds=60)
        self.assertIsNone(cm.exception.status)
        self.assertEqual(cm.exception.code, "connection_error")

    def test_unknown_lease_and_target(self):
        client = new_client()
        with self.assertRaises(syvault.NotFoundError):
            client.dynamic.get_lease(str(uuid.uuid4()))
        with self.assertRaises(syvault.NotFoundError):
            client.dynamic.revoke_lease(str(uuid.uuid4()))
        with self.assertRaises(syvault.NotFoundError):
            client.dynamic.renew_lease(str(uuid.uuid4()), ttl_seconds=60)
        with self.assertRaises(syvault.NotFoundError):
            client.dynamic.get_target("NoSuchRecord")

    def test_invalid_target_is_invalid_request(self):
        with self.assertRaises(syvault.InvalidRequestError) as cm:
            new_client().dynamic.create_target(name="bad", engine="oracle", host="127.0.0.1", port=1521, database="x",
                                               admin_username="a", admin_password="b", grants=[])
        self.assertEqual(cm.exception.status, 400)

    def test_list_limit_out_of_range(self):
        with self.assertRaises(syvault.InvalidRequestError):
            new_client().dynamic.list_leases(limit=0)


class PostgresTests(unittest.TestCase):
    """Leases on a scratch database of the local PostgreSQL."""

    @classmethod
    def setUpClass(cls):
        problem = _harness.postgres_problem()
        if problem:
            raise _harness.unavailable(problem)
        import psycopg2

        cls.psycopg2 = psycopg2
        cls.db = scratch_name("syvault_sdkpy")
        cls.record_uid = None
        cls.usernames = set()
        psql("CREATE DATABASE %s" % ident(cls.db))
        try:
            psql("CREATE TABLE orders (id int, item text); INSERT INTO orders VALUES (1, 'book')", database=cls.db)
            cls.client = new_client()
            target = cls.client.dynamic.create_target(
                name=cls.db,
                engine="postgresql",
                host="127.0.0.1",
                port=5432,
                database=cls.db,
                admin_username="postgres",
                admin_password="x",
                tls_mode="disable",
                grants=[{"database": cls.db, "schema": "public", "privileges": ["SELECT", "INSERT"]}],
            )
            cls.record_uid = target.record_uid
        except BaseException:
            cls._cleanup()
            raise

    @classmethod
    def tearDownClass(cls):
        cls._cleanup()

    @classmethod
    def _cleanup(cls):
        errors = []
        if cls.record_uid:
            try:
                cls.client.dynamic.delete_target(cls.record_uid, revoke_leases=True)
            except Exception as e:  # noqa: BLE001
                errors.append(e)
        try:
            psql("DROP DATABASE IF EXISTS %s WITH (FORCE)" % ident(cls.db))
        except Exception as e:  # noqa: BLE001
            errors.append(e)
        # Roles are cluster-wide: the target's group role and any user a failed test left.
        roles = set(cls.usernames)
        if cls.record_uid:
            roles.add("syvault_" + cls.record_uid)
        for role in sorted(roles):
            try:
                psql("DROP ROLE IF EXISTS %s" % ident(role))
            except Exception as e:  # noqa: BLE001
                errors.append(e)
        if errors:
            raise errors[0]

    # helpers

    def lease(self, ttl=600):
        lease = self.client.dynamic.create_lease(record_uid=self.record_uid, ttl_seconds=ttl)
        self.usernames.add(lease.username)
        return lease

    def revoke_quietly(self, lease_id):
        try:
            self.client.dynamic.revoke_lease(lease_id)
        except syvault.NotFoundError:
            pass

    def assert_login_refused(self, connection_string):
        with self.assertRaises(self.psycopg2.OperationalError):
            conn = self.psycopg2.connect(connection_string, connect_timeout=5)
            conn.close()

    # tests

    def test_seed_sample_runs_verbatim(self):
        code = SEED_PYTHON_SAMPLE
        for old, new in (
            ('"https://vault.example.com"', repr(SERVER.url)),
            ('"c9a1b2d3-4e5f-6789-abcd-ef0123456789"', repr(SERVER.client_id)),
            ('"/etc/syvault/client.pem"', repr(str(SERVER.key_path))),
            ('"7Kj9mNpQ2xRs"', repr(self.record_uid)),
        ):
            self.assertEqual(code.count(old), 1, old)
            code = code.replace(old, new)
        namespace = {"__name__": "seed_sample"}
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(code, "<seed sample>", "exec"), namespace)
        lease, conn = namespace["lease"], namespace["conn"]
        self.usernames.add(lease.username)
        try:
            lines = out.getvalue().splitlines()
            self.assertEqual(len(lines), 2, "the sample prints two lines")
            self.assertTrue(lines[0].startswith("Connect with: postgresql://%s:" % lease.username), "first line is the connection string")
            self.assertTrue(lines[0].endswith("@127.0.0.1:5432/%s" % self.db))
            self.assertEqual(lines[1], "Expires at: %s" % lease.expires_at)
            self.assertRegex(lines[1], r"^Expires at: \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
            # The connection was opened as the lease's user ...
            self.assertEqual(conn.info.user, lease.username)
            # ... and the revocation ended it and dropped the user.
            with self.assertRaises((self.psycopg2.OperationalError, self.psycopg2.InterfaceError)):
                with conn.cursor() as cur:
                    cur.execute("SELECT 1")
            self.assertFalse(role_exists(lease.username))
            self.assertEqual(self.client.dynamic.get_lease(lease.lease_id).status, "revoked")
            self.assert_login_refused(lease.connection_string)
        finally:
            conn.close()

    def test_lease_login_select_revoke(self):
        lease = self.lease()
        self.assertRegex(lease.username, r"^vf_tmp_[a-z0-9]{8}$")
        self.assertGreaterEqual(len(lease.password), 20)
        self.assertEqual((lease.record_uid, lease.engine, lease.host, lease.port, lease.database),
                         (self.record_uid, "postgresql", "127.0.0.1", 5432, self.db))
        self.assertEqual((lease.expires_at_datetime - lease.created_at_datetime).total_seconds(), 600)
        conn = self.psycopg2.connect(lease.connection_string, connect_timeout=5)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT item FROM orders WHERE id = 1")
                self.assertEqual(cur.fetchone(), ("book",))
                cur.execute("INSERT INTO orders VALUES (2, 'pen')")
            conn.commit()
            self.assertTrue(role_exists(lease.username))
            self.client.dynamic.revoke_lease(lease.lease_id)
            # The open session was terminated, the user dropped, new logins refused.
            with self.assertRaises((self.psycopg2.OperationalError, self.psycopg2.InterfaceError)):
                with conn.cursor() as cur:
                    cur.execute("SELECT 1")
        finally:
            conn.close()
        self.assertFalse(role_exists(lease.username))
        self.assert_login_refused(lease.connection_string)
        with self.assertRaises(syvault.NotFoundError):
            self.client.dynamic.revoke_lease(lease.lease_id)

    def test_list_and_iterate_pages(self):
        leases = [self.lease() for _ in range(3)]
        try:
            ids = [l.lease_id for l in leases]
            page = self.client.dynamic.list_leases(record_uid=self.record_uid)
            self.assertEqual([l.lease_id for l in page], ids)  # oldest first, this target only
            self.assertIsNone(page.next_cursor)
            for info, lease in zip(page, leases):
                self.assertEqual((info.record_uid, info.username, info.expires_at), (self.record_uid, lease.username, lease.expires_at))
            self.assertIn(ids[0], [l.lease_id for l in self.client.dynamic.list_leases(limit=1000)])

            first = self.client.dynamic.list_leases(record_uid=self.record_uid, limit=1)
            self.assertEqual(len(first), 1)
            self.assertTrue(first.has_more)
            second = self.client.dynamic.list_leases(record_uid=self.record_uid, limit=1, cursor=first.next_cursor)
            self.assertEqual(second[0].lease_id, ids[1])

            self.assertEqual([l.lease_id for l in self.client.dynamic.iter_leases(record_uid=self.record_uid, page_size=1)], ids)
        finally:
            for lease in leases:
                self.revoke_quietly(lease.lease_id)
        self.assertEqual(list(self.client.dynamic.iter_leases(record_uid=self.record_uid, page_size=1)), [])

    def test_get_lease_status_transitions(self):
        lease = self.lease()
        info = self.client.dynamic.get_lease(lease.lease_id)
        self.assertEqual(info.status, "active")
        self.assertTrue(info.active)
        self.assertIsNone(info.ended_at)
        self.assertEqual((info.lease_id, info.username, info.expires_at, info.created_at),
                         (lease.lease_id, lease.username, lease.expires_at, lease.created_at))
        self.client.dynamic.revoke_lease(lease.lease_id)
        info = self.client.dynamic.get_lease(lease.lease_id)
        self.assertEqual(info.status, "revoked")
        self.assertIsNotNone(info.ended_at_datetime)
        self.assertNotIn(lease.lease_id, [l.lease_id for l in self.client.dynamic.iter_leases(record_uid=self.record_uid)])
        with self.assertRaises(syvault.NotFoundError):
            self.client.dynamic.renew_lease(lease.lease_id, ttl_seconds=60)

    def test_renew_moves_expiry(self):
        lease = self.lease(ttl=60)
        try:
            renewed = self.client.dynamic.renew_lease(lease.lease_id, ttl_seconds=1800)
            self.assertEqual(renewed.lease_id, lease.lease_id)
            self.assertGreater(renewed.expires_at_datetime, lease.expires_at_datetime)
            self.assertGreaterEqual((renewed.expires_at_datetime - lease.created_at_datetime).total_seconds(), 1800)
            self.assertEqual(self.client.dynamic.get_lease(lease.lease_id).expires_at, renewed.expires_at)
            with self.assertRaises(syvault.InvalidTTLError):
                self.client.dynamic.renew_lease(lease.lease_id, ttl_seconds=0)
        finally:
            self.revoke_quietly(lease.lease_id)

    def test_repr_hides_password(self):
        lease = self.lease()
        try:
            text = repr(lease) + str(lease) + repr([lease])
            self.assertNotIn(lease.password, text)
            encoded = re.search(r"://[^:]+:([^@]+)@", lease.connection_string).group(1)
            self.assertNotIn(encoded, text)
            self.assertNotIn(lease.connection_string, text)
            self.assertIn(lease.lease_id, text)
            self.assertIn(lease.username, text)
        finally:
            self.revoke_quietly(lease.lease_id)

    def test_target_api(self):
        target = self.client.dynamic.get_target(self.record_uid)
        self.assertEqual((target.name, target.engine, target.database, target.tls_mode), (self.db, "postgresql", self.db, "disable"))
        self.assertNotIn("admin_password", target.to_dict())
        self.assertIn(self.record_uid, [t.record_uid for t in self.client.dynamic.list_targets()])
        lease = self.lease()
        try:
            with self.assertRaises(syvault.ConflictError) as cm:
                self.client.dynamic.delete_target(self.record_uid)
            self.assertEqual((cm.exception.status, cm.exception.code), (409, "conflict"))
        finally:
            self.revoke_quietly(lease.lease_id)

    def test_unverified_and_unavailable_targets(self):
        weak = scratch_name("syvault_sdkpy_weak")
        psql("CREATE ROLE %s LOGIN" % ident(weak))
        try:
            with self.assertRaises(syvault.TargetUnverifiedError) as cm:
                self.client.dynamic.create_target(
                    name=weak, engine="postgresql", host="127.0.0.1", port=5432, database=self.db,
                    admin_username=weak, admin_password="x", tls_mode="disable",
                    grants=[{"database": self.db, "schema": "public", "privileges": ["SELECT"]}])
            self.assertEqual((cm.exception.status, cm.exception.code), (422, "target_unverified"))
        finally:
            psql("DROP ROLE IF EXISTS %s" % ident(weak))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
            with self.assertRaises(syvault.TargetUnavailableError) as cm:
                self.client.dynamic.create_target(
                    name="down", engine="postgresql", host="127.0.0.1", port=port, database=self.db,
                    admin_username="postgres", admin_password="x", tls_mode="disable",
                    grants=[{"database": self.db, "schema": "public", "privileges": ["SELECT"]}])
        self.assertEqual((cm.exception.status, cm.exception.code), (502, "target_unavailable"))


if __name__ == "__main__":
    unittest.main()
