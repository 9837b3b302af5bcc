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
from datetime import datetime, timedelta, timezone

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
        cls.extra_targets = []  # record uids tests registered besides record_uid
        cls.extra_clients = []  # client ids tests registered
        psql("CREATE DATABASE %s" % ident(cls.db))
        try:
            psql("CREATE TABLE orders (id int, item text); INSERT INTO orders VALUES (1, 'book')", database=cls.db)
            cls.client = new_client()
            cls.target_body = dict(
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
            target = cls.client.dynamic.create_target(**cls.target_body)
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
        for client_id in cls.extra_clients:
            try:
                cls.client.clients.delete(client_id)
            except syvault.NotFoundError:
                pass
            except Exception as e:  # noqa: BLE001
                errors.append(e)
        for uid in [cls.record_uid] + cls.extra_targets:
            if not uid:
                continue
            try:
                cls.client.dynamic.delete_target(uid, revoke_leases=True)
            except syvault.NotFoundError:
                pass
            except Exception as e:  # noqa: BLE001
                errors.append(e)
        try:
            psql("DROP DATABASE IF EXISTS %s WITH (FORCE)" % ident(cls.db))
        except Exception as e:  # noqa: BLE001
            errors.append(e)
        # Roles are cluster-wide: the target's group role and any user a failed test left.
        roles = set(cls.usernames)
        for uid in [cls.record_uid] + cls.extra_targets:
            if uid:
                roles.add("syvault_" + uid)
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

    def test_forced_revoke_that_drops(self):
        """A forced revocation whose drop finishes returns the lease revoked, not abandoned:
        force gives up only a drop that cannot finish."""
        lease = self.lease()
        ended = self.client.dynamic.revoke_lease(lease.lease_id, force=True)
        self.assertEqual((ended.lease_id, ended.status, ended.abandoned), (lease.lease_id, "revoked", None))
        self.assertFalse(role_exists(lease.username))
        with self.assertRaises(syvault.NotFoundError):
            self.client.dynamic.revoke_lease(lease.lease_id, force=True)
        with self.assertRaises(syvault.InvalidRequestError):
            self.client.dynamic.delete_target(self.record_uid, force=True)

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

    def test_target_warnings(self):
        """Where every role may create in public (PostgreSQL 14's default) the target is
        registered, its answer warning with the statement that takes it away; a read of the
        target, and an update once it is taken away, warn of nothing."""
        self.assertIsNone(self.client.dynamic.get_target(self.record_uid).warnings)
        psql("GRANT CREATE ON SCHEMA public TO PUBLIC", database=self.db)
        try:
            target = self.client.dynamic.create_target(**dict(self.target_body, name=self.db + "_warned"))
            self.extra_targets.append(target.record_uid)
            self.assertEqual(len(target.warnings), 1)
            self.assertIn('REVOKE CREATE ON SCHEMA "public" FROM PUBLIC', target.warnings[0])
            self.assertIn(self.db, target.warnings[0])
            self.assertIsNone(self.client.dynamic.get_target(target.record_uid).warnings)
            psql("REVOKE CREATE ON SCHEMA public FROM PUBLIC", database=self.db)
            updated = self.client.dynamic.update_target(target.record_uid, **dict(self.target_body, name=self.db + "_warned"))
            self.assertIsNone(updated.warnings)
        finally:
            psql("REVOKE CREATE ON SCHEMA public FROM PUBLIC", database=self.db)

    def test_keep_fresh_renews_rotates_and_revokes(self):
        """A target whose leases may live 6 s, leases asked for 4 s: the keeper renews, a
        renewal comes back short (the cap), it rotates and calls on_rotate; the old lease is
        revoked after the grace period (its open session ends, its user is dropped);
        leaving the with block revokes the current one. The log holds no secret."""
        target = self.client.dynamic.create_target(**dict(self.target_body, name=self.db + "_fresh", max_ttl_seconds=6))
        self.extra_targets.append(target.record_uid)
        new_leases, rotated, on_rotate = _harness.recorder()
        with self.assertLogs("syvault", level="INFO") as logs:
            with self.client.dynamic.keep_fresh(record_uid=target.record_uid, ttl_seconds=4, on_rotate=on_rotate,
                                                grace_seconds=0.5) as keeper:
                first = keeper.lease
                self.usernames.add(first.username)
                old_conn = self.psycopg2.connect(first.connection_string, connect_timeout=5)
                try:
                    self.assertTrue(rotated.wait(20), "no rotation")
                    second = new_leases[0]
                    self.usernames.add(second.username)
                    self.assertNotEqual(second.lease_id, first.lease_id)
                    _harness.wait_for(lambda: self.client.dynamic.get_lease(first.lease_id).status == "revoked", 10,
                                      "the old lease revoked")
                    self.assertFalse(role_exists(first.username))
                    with self.assertRaises((self.psycopg2.OperationalError, self.psycopg2.InterfaceError)):
                        with old_conn.cursor() as cur:
                            cur.execute("SELECT 1")
                finally:
                    old_conn.close()
                current = keeper.lease
                conn = self.psycopg2.connect(current.connection_string, connect_timeout=5)
                with conn.cursor() as cur:
                    cur.execute("SELECT session_user")
                    self.assertEqual(cur.fetchone(), (current.username,))
                conn.close()
            self.usernames.update(lease.username for lease in new_leases)
            self.assertEqual(self.client.dynamic.get_lease(current.lease_id).status, "revoked")
            self.assertFalse(role_exists(current.username))

        text = "\n".join(logs.output)
        self.assertIn("lease renewed lease_id=%s" % first.lease_id, text)
        self.assertIn("at_cap=False", text)
        rotated_at = next(r.created for r in logs.records if r.getMessage().startswith("lease rotated old_lease_id=" + first.lease_id))
        revoked_at = next(r.created for r in logs.records if r.getMessage() == "lease revoked lease_id=" + first.lease_id)
        self.assertGreaterEqual(revoked_at - rotated_at, 0.5)
        for lease in [first] + new_leases:
            self.assertNotIn(lease.password, text)
            self.assertNotIn(lease.connection_string, text)

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
        # Registration says what to fix, even when nothing listens at the address: 422.
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
            with self.assertRaises(syvault.TargetUnverifiedError) as cm:
                self.client.dynamic.create_target(
                    name="down", engine="postgresql", host="127.0.0.1", port=port, database=self.db,
                    admin_username="postgres", admin_password="x", tls_mode="disable",
                    grants=[{"database": self.db, "schema": "public", "privileges": ["SELECT"]}])
        self.assertEqual((cm.exception.status, cm.exception.code), (422, "target_unverified"))
        self.assertIn("port", cm.exception.message)


    # clients, audit and target updates (admin API)

    def test_app_client_leases_only_its_records_and_is_audited(self):
        admin = self.client
        other = admin.dynamic.create_target(**dict(self.target_body, name=self.db + "_other"))
        self.extra_targets.append(other.record_uid)
        private_pem, public_pem = syvault.generate_key_pair()
        info = admin.clients.create(name="sdk-app-" + self.db, public_key=public_pem,
                                    allowed_records=[self.record_uid], max_ttl_seconds=3600)
        self.extra_clients.append(info.client_id)
        self.assertIsInstance(info, syvault.ClientInfo)
        uuid.UUID(info.client_id)
        self.assertEqual((info.name, info.role, info.allowed_records, info.max_ttl_seconds),
                         ("sdk-app-" + self.db, "app", [self.record_uid], 3600))
        self.assertFalse(info.is_admin)
        self.assertEqual(info.public_key.strip(), public_pem.strip())
        self.assertLess(abs((datetime.now(timezone.utc) - info.created_at_datetime).total_seconds()), 120)

        app = SecretsManagerClient(server=SERVER.url, client_id=info.client_id, private_key=private_pem)
        lease = app.dynamic.create_lease(record_uid=self.record_uid, ttl_seconds=600)
        self.usernames.add(lease.username)
        try:
            self.assertEqual(lease.record_uid, self.record_uid)
            self.assertEqual(app.dynamic.get_lease(lease.lease_id).client_id, info.client_id)
            # Beyond its cap.
            with self.assertRaises(syvault.InvalidTTLError):
                app.dynamic.create_lease(record_uid=self.record_uid, ttl_seconds=7200)
            # Not its record.
            with self.assertRaises(syvault.PermissionDeniedError) as cm:
                app.dynamic.create_lease(record_uid=other.record_uid, ttl_seconds=60)
            self.assertEqual((cm.exception.status, cm.exception.code), (403, "forbidden"))
            # Not an admin.
            for call in (app.clients.list, lambda: app.clients.get(info.client_id), lambda: app.audit.list(),
                         lambda: app.dynamic.update_target(self.record_uid, **self.target_body)):
                with self.assertRaises(syvault.PermissionDeniedError) as cm:
                    call()
                self.assertEqual(cm.exception.status, 403)

            # The admin sees the client.
            listed = {c.client_id: c for c in admin.clients.list()}
            self.assertIn(info.client_id, listed)
            self.assertIn(SERVER.client_id, listed)
            self.assertTrue(listed[SERVER.client_id].is_admin)
            self.assertEqual(listed[info.client_id], info)
            self.assertEqual(admin.clients.get(info.client_id), info)

            # The audit trail, oldest first.
            since = syvault.format_time(timedelta(minutes=5))
            events = list(admin.audit.iter(since=timedelta(minutes=5)))
            seqs = [e.seq for e in events]
            self.assertEqual(seqs, sorted(set(seqs)), "oldest first: seq strictly increasing")
            # (Some event types carry whole-second times, so times are only ordered to the second.)
            cutoff = syvault.models.parse_time(since).replace(microsecond=0)
            self.assertTrue(all(e.time_datetime >= cutoff for e in events), events)
            requested = [e for e in events if e.type == "lease.requested" and e.lease_id == lease.lease_id]
            self.assertEqual(len(requested), 1, events)
            self.assertEqual((requested[0].client_id, requested[0].record_uid, requested[0].ttl_seconds),
                             (info.client_id, self.record_uid, 600))
            # Refused mutations are audited (refused reads, like clients.list, are not).
            refusals = [e for e in events if e.type == "access.denied" and e.client_id == info.client_id]
            self.assertEqual([(e.action, e.record_uid, e.outcome) for e in refusals],
                             [("lease.create", other.record_uid, "forbidden"), ("target.manage", self.record_uid, "forbidden")])
            denied = refusals[:1]
            self.assertLess(requested[0].seq, denied[0].seq)
            registered = [e for e in events if e.type == "client.registered" and e.subject_client_id == info.client_id]
            self.assertEqual([e.client_id for e in registered], [SERVER.client_id])
            self.assertLess(registered[0].seq, requested[0].seq)

            # Pages of 2 give the same events; a page's cursor continues after it.
            whole = [e.seq for e in admin.audit.iter(since=since)]
            self.assertEqual(whole[:len(seqs)], seqs)
            self.assertEqual([e.seq for e in admin.audit.iter(since=since, limit=2)][:len(whole)], whole)
            first = admin.audit.list(since=since, limit=2)
            self.assertEqual([e.seq for e in first], whole[:2])
            self.assertTrue(first.has_more)
            self.assertEqual([e.seq for e in admin.audit.list(cursor=first.next_cursor, limit=1)], [whole[2]])
            # since/until as datetimes and strings.
            window = admin.audit.list(since=requested[0].time_datetime, until=denied[0].time, limit=1000)
            self.assertIn(requested[0].seq, [e.seq for e in window])
            self.assertIn(denied[0].seq, [e.seq for e in window])
            for e in window:
                self.assertTrue(requested[0].time_datetime <= e.time_datetime <= denied[0].time_datetime, e)
            self.assertEqual(len(admin.audit.list(until=datetime.now(timezone.utc) - timedelta(days=1))), 0)
            self.assertEqual(len(admin.audit.list(since=datetime.utcnow() + timedelta(hours=1))), 0)  # naive = UTC

            # Filters.
            of_lease = list(admin.audit.iter(lease_id=lease.lease_id))
            self.assertTrue(of_lease)
            self.assertTrue(all(e.lease_id == lease.lease_id for e in of_lease), of_lease)
            self.assertEqual([e.type for e in of_lease][:2], ["lease.requested", "lease.activated"])
            self.assertEqual(of_lease[0].username, lease.username)
            of_client = list(admin.audit.iter(client_id=info.client_id, since=timedelta(minutes=5)))
            self.assertTrue(all(info.client_id in (e.client_id, e.subject_client_id) for e in of_client), of_client)
            self.assertEqual({e.seq for e in of_client} >= {registered[0].seq, requested[0].seq, denied[0].seq}, True)
            of_other = list(admin.audit.iter(record_uid=other.record_uid, since=timedelta(minutes=5)))
            self.assertTrue(all(e.record_uid == other.record_uid for e in of_other))
            self.assertIn(denied[0].seq, [e.seq for e in of_other])

            app.dynamic.revoke_lease(lease.lease_id)
            types = [e.type for e in admin.audit.iter(lease_id=lease.lease_id)]
            self.assertIn("lease.revoked", types)
            self.assertEqual(types[-1], "lease.dropped")  # the worker reports the user dropped
        finally:
            self.revoke_quietly(lease.lease_id)

        # A client cannot delete itself; the admin deletes the app client.
        with self.assertRaises(syvault.ConflictError) as cm:
            admin.clients.delete(SERVER.client_id)
        self.assertEqual(cm.exception.status, 409)
        app.get_token()  # a cached token the deletion must invalidate
        admin.clients.delete(info.client_id)
        requests_before = app.token_requests
        with self.assertRaises(syvault.AuthenticationError) as cm:
            app.dynamic.list_leases()  # the cached token is refused, and so is a new one
        self.assertEqual((cm.exception.status, cm.exception.code), (401, "unauthenticated"))
        self.assertEqual(app.token_requests, requests_before + 1)
        app.invalidate_token()
        with self.assertRaises(syvault.AuthenticationError) as cm:
            app.dynamic.list_leases()
        self.assertEqual(cm.exception.status, 401)
        with self.assertRaises(syvault.NotFoundError):
            admin.clients.get(info.client_id)
        with self.assertRaises(syvault.NotFoundError):
            admin.clients.delete(info.client_id)
        self.assertNotIn(info.client_id, [c.client_id for c in admin.clients.list()])
        removed = [e for e in admin.audit.iter(client_id=info.client_id, since=timedelta(minutes=5)) if e.type == "client.removed"]
        self.assertEqual([e.subject_client_id for e in removed], [info.client_id])

    def test_max_leases(self):
        private_pem, public_pem = syvault.generate_key_pair()
        with self.assertRaises(syvault.InvalidRequestError) as cm:
            self.client.clients.create(name="sdk-capped-bad-" + self.db, public_key=public_pem,
                                       allowed_records=[self.record_uid], max_leases=-1)
        self.assertIn("max_leases", cm.exception.message)
        info = self.client.clients.create(name="sdk-capped-" + self.db, public_key=public_pem,
                                          allowed_records=[self.record_uid], max_leases=1)
        self.extra_clients.append(info.client_id)
        self.assertEqual(info.max_leases, 1)
        app = SecretsManagerClient(server=SERVER.url, client_id=info.client_id, private_key=private_pem)
        lease = app.dynamic.create_lease(record_uid=self.record_uid, ttl_seconds=600)
        self.usernames.add(lease.username)
        with self.assertRaises(syvault.TooManyLeasesError) as cm:
            app.dynamic.create_lease(record_uid=self.record_uid, ttl_seconds=600)
        self.assertEqual((cm.exception.status, cm.exception.code), (429, "too_many_leases"))
        # Raised in place: the client keeps its id and key.
        raised = self.client.clients.update(info.client_id, max_leases=2)
        self.assertEqual((raised.client_id, raised.max_leases, raised.allowed_records), (info.client_id, 2, [self.record_uid]))
        second = app.dynamic.create_lease(record_uid=self.record_uid, ttl_seconds=600)
        self.usernames.add(second.username)
        app.dynamic.revoke_lease(lease.lease_id)
        again = app.dynamic.create_lease(record_uid=self.record_uid, ttl_seconds=600)
        self.usernames.add(again.username)
        for l in (second, again):
            app.dynamic.revoke_lease(l.lease_id)

    def test_updates_name_their_version(self):
        private_pem, public_pem = syvault.generate_key_pair()
        info = self.client.clients.create(name="sdk-versioned-" + self.db, public_key=public_pem, allowed_records=[self.record_uid])
        self.extra_clients.append(info.client_id)
        read = self.client.clients.get(info.client_id)
        self.assertTrue(read.etag)
        updated = self.client.clients.update(info.client_id, max_leases=3)
        self.assertTrue(updated.etag)
        self.assertNotEqual(updated.etag, read.etag)
        # A replacement made from the first read is refused and changes nothing.
        stale = {"name": read.name, "public_key": read.public_key, "role": read.role, "allowed_records": read.allowed_records}
        with self.assertRaises(syvault.PreconditionFailedError) as cm:
            self.client.exchange("PUT", "/api/sm/v1/clients/" + info.client_id, stale, headers={"If-Match": read.etag})
        self.assertEqual((cm.exception.status, cm.exception.code), (412, "precondition_failed"))
        now = self.client.clients.get(info.client_id)
        self.assertEqual((now.max_leases, now.etag), (3, updated.etag))
        # A target's, likewise.
        cur = self.client.dynamic.get_target(self.record_uid)
        self.assertTrue(cur.etag)
        after = self.client.dynamic.update_target(self.record_uid, self.target_body, if_match=cur.etag)
        self.assertNotEqual(after.etag, cur.etag)
        with self.assertRaises(syvault.PreconditionFailedError):
            self.client.dynamic.update_target(self.record_uid, self.target_body, if_match=cur.etag)
        self.assertEqual(self.client.dynamic.get_target(self.record_uid).etag, after.etag)

    def test_create_client_key_forms(self):
        admin = self.client
        private_pem, public_pem = syvault.generate_key_pair()
        path = SERVER.tmp / ("app-%s.pub" % uuid.uuid4().hex)
        path.write_text(public_pem)
        info = admin.clients.create(name="from-path", public_key_path=str(path), role="admin")
        self.extra_clients.append(info.client_id)
        self.assertEqual((info.role, info.allowed_records, info.max_ttl_seconds), ("admin", [], None))
        self.assertTrue(info.is_admin)
        # An admin client made from Python can use the admin API.
        other_admin = SecretsManagerClient(server=SERVER.url, client_id=info.client_id, private_key=private_pem)
        self.assertIn(info.client_id, [c.client_id for c in other_admin.clients.list()])
        admin.clients.delete(info.client_id)
        # The server checks the rest.
        with self.assertRaises(syvault.NotFoundError):
            admin.clients.create(name="x", public_key=public_pem, allowed_records=["NoSuchRecord"])
        with self.assertRaises(syvault.InvalidRequestError):
            admin.clients.create(name="x", public_key=public_pem, role="root")
        with self.assertRaises(syvault.InvalidRequestError):
            admin.clients.create(name=" ", public_key=public_pem)
        with self.assertRaises(syvault.NotFoundError):
            admin.clients.get(str(uuid.uuid4()))

    def test_update_target_with_the_same_body(self):
        before = self.client.dynamic.get_target(self.record_uid)
        updated = self.client.dynamic.update_target(self.record_uid, **self.target_body)
        self.assertIsInstance(updated, syvault.Target)
        self.assertEqual(updated.record_uid, self.record_uid)
        for field in ("name", "engine", "host", "port", "database", "admin_username", "tls_mode", "grants", "max_ttl_seconds"):
            self.assertEqual(getattr(updated, field), getattr(before, field), field)
        self.assertEqual(self.client.dynamic.get_target(self.record_uid).to_dict(), updated.to_dict())
        # The mapping form, too; and a lease still works afterwards.
        self.client.dynamic.update_target(self.record_uid, dict(self.target_body))
        lease = self.lease()
        self.revoke_quietly(lease.lease_id)
        with self.assertRaises(syvault.InvalidRequestError):
            self.client.dynamic.update_target(self.record_uid, self.target_body, engine="mysql", port=3306)
        with self.assertRaises(syvault.NotFoundError):
            self.client.dynamic.update_target("NoSuchRecord", **self.target_body)
        with self.assertRaises(syvault.TargetUnverifiedError):
            weak = scratch_name("syvault_sdkpy_weak")
            psql("CREATE ROLE %s LOGIN PASSWORD 'weakpw'" % ident(weak))
            try:
                self.client.dynamic.update_target(self.record_uid, self.target_body, admin_username=weak, admin_password="weakpw")
            finally:
                psql("DROP ROLE IF EXISTS %s" % ident(weak))
        self.assertEqual(self.client.dynamic.get_target(self.record_uid).admin_username, "postgres")  # unchanged

if __name__ == "__main__":
    unittest.main()
