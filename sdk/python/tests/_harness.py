"""Test helpers: a real SyVault server built from this repository, and the local
PostgreSQL through psql. Not a test module (unittest only collects test*.py)."""

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.error
import urllib.request
from pathlib import Path

SDK_DIR = Path(__file__).resolve().parents[1]
REPO_ROOT = Path(__file__).resolve().parents[3]

if str(SDK_DIR) not in sys.path:  # the package under test, not an installed copy
    sys.path.insert(0, str(SDK_DIR))

# The product document's "Python SDK" sample, verbatim (its indentation was lost in the
# document; inside parentheses that is still valid Python). Only the server, client id,
# key path and record uid are substituted before running it.
SEED_PYTHON_SAMPLE = '''from syvault import SecretsManagerClient
client = SecretsManagerClient(
server="https://vault.example.com",
client_id="c9a1b2d3-4e5f-6789-abcd-ef0123456789",
private_key_path="/etc/syvault/client.pem"
)
# Create a 1-hour lease
lease = client.dynamic.create_lease(
record_uid="7Kj9mNpQ2xRs",
ttl_seconds=3600
)
print(f"Connect with: {lease.connection_string}")
print(f"Expires at: {lease.expires_at}")
# Use the credentials
import psycopg2
conn = psycopg2.connect(lease.connection_string)
# When done, revoke early
client.dynamic.revoke_lease(lease.lease_id)
'''

READY_DEADLINE_SECONDS = 60.0
PG_HOST, PG_PORT, PG_SUPERUSER = "127.0.0.1", 5432, "postgres"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def unavailable(reason: str) -> BaseException:
    """What to raise when a prerequisite is missing: a skip locally, a failure in CI."""
    if in_ci():
        return RuntimeError("CI=true but the integration prerequisites are missing: " + reason)
    return unittest.SkipTest(reason + " (with CI=true this is a failure)")


def wait_for(predicate, timeout: float, what: str) -> None:
    """Poll predicate until it is true, failing with what after timeout seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("not within %gs: %s" % (timeout, what))
        time.sleep(0.02)  # polling interval of a deadline-bounded wait, not synchronisation


def recorder():
    """A callback that keeps what it is called with and sets an event each time:
    (calls, called, callback)."""
    calls, called = [], threading.Event()

    def callback(arg):
        calls.append(arg)
        called.set()

    return calls, called, callback


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``syvault serve --dev`` in a temporary directory, with its admin credentials."""

    def __init__(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="syvault-sdk-test-"))
        self.proc = None
        self.log_path = self.tmp / "server.log"
        self._log = None
        self.url = ""
        self.client_id = ""
        self.private_key = ""
        self.key_path = self.tmp / "client.pem"

    def start(self) -> None:
        binary = self._binary()
        port = free_port()
        data = self.tmp / "data"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [str(binary), "serve", "--dev", "--data-dir", str(data), "--listen", "127.0.0.1:%d" % port],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=str(self.tmp),
        )
        self._wait_ready("http://127.0.0.1:%d/readyz" % port)
        creds = json.loads((data / "admin-client.json").read_text())
        self.url, self.client_id, self.private_key = creds["server"], creds["client_id"], creds["private_key"]
        fd = os.open(str(self.key_path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.private_key)
        os.chmod(str(self.key_path), 0o600)

    def _binary(self) -> Path:
        prebuilt = os.environ.get("SYVAULT_BIN")
        if prebuilt:
            return Path(prebuilt)
        go = shutil.which("go")
        if go is None:
            raise unavailable("Go is not installed, so the SyVault server cannot be built")
        if not (REPO_ROOT / "go.mod").is_file():
            raise unavailable("the repository root (go.mod) was not found at %s" % REPO_ROOT)
        out = self.tmp / "syvault"
        r = subprocess.run(
            [go, "build", "-o", str(out), "./cmd/syvault"],
            cwd=str(REPO_ROOT),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=900,
        )
        if r.returncode != 0:
            raise RuntimeError("go build ./cmd/syvault failed:\n" + r.stdout.decode("utf-8", "replace")[-4000:])
        return out

    def _wait_ready(self, url: str) -> None:
        deadline = time.monotonic() + READY_DEADLINE_SECONDS
        last = "no answer yet"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("syvault serve exited with %s before it was ready:\n%s" % (self.proc.returncode, self.log_tail()))
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    if resp.status == 200:
                        return
                    last = "status %d" % resp.status
            except urllib.error.HTTPError as e:
                last = "status %d" % e.code
            except (urllib.error.URLError, OSError) as e:
                last = str(e)
            time.sleep(0.1)  # polling interval, not synchronisation
        raise RuntimeError("syvault serve was not ready within %gs (%s):\n%s" % (READY_DEADLINE_SECONDS, last, self.log_tail()))

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_bytes()[-n:].decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self) -> None:
        try:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=10)
        finally:
            if self._log is not None:
                self._log.close()
            shutil.rmtree(str(self.tmp), ignore_errors=True)


# PostgreSQL -------------------------------------------------------------------------------

_IDENT = re.compile(r"^[a-z_][a-z0-9_]*$", re.IGNORECASE)


def ident(name: str) -> str:
    """A quoted SQL identifier; names here are generated, but check anyway."""
    if not _IDENT.match(name):
        raise ValueError("unexpected identifier %r" % name)
    return '"%s"' % name


def psql(sql: str, database: str = "postgres") -> str:
    env = dict(os.environ, PGCONNECT_TIMEOUT="5")
    r = subprocess.run(
        ["psql", "-h", PG_HOST, "-p", str(PG_PORT), "-U", PG_SUPERUSER, "-d", database, "-v", "ON_ERROR_STOP=1", "-X", "-qAt", "-c", sql],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        timeout=60,
    )
    if r.returncode != 0:
        raise RuntimeError("psql failed (%s): %s" % (sql, r.stderr.decode("utf-8", "replace").strip()))
    return r.stdout.decode("utf-8").strip()


def postgres_problem():
    """None if psql, a local PostgreSQL superuser login and psycopg2 are usable, else why not."""
    if shutil.which("psql") is None:
        return "psql is not installed"
    try:
        psql("SELECT 1")
    except Exception as e:  # noqa: BLE001
        return "PostgreSQL at %s:%d as %s is not usable: %s" % (PG_HOST, PG_PORT, PG_SUPERUSER, e)
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        return "psycopg2 is not importable (run deploy/dev/python-deps.sh)"
    return None


def role_exists(name: str) -> bool:
    if not _IDENT.match(name):
        raise ValueError("unexpected role name %r" % name)
    return psql("SELECT count(*) FROM pg_roles WHERE rolname = '%s'" % name) == "1"


def scratch_name(prefix: str) -> str:
    return "%s_%s" % (prefix, secrets.token_hex(4))
