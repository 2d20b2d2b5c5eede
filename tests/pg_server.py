"""A throwaway PostgreSQL server for tests and benchmarks (real server, no mocks).

    with PgServer() as pg:              # initdb + start on 127.0.0.1:<free port>, trust auth, fsync off
        pg.create_db("pmacct")
        rows = pg.query("pmacct", "SELECT * FROM acct_v9")
        pg.stop(); pg.start()           # outage tests: same data folder, same port

The data folder and the socket folder live under a private temp folder owned
by the `postgres` user (initdb refuses root: it runs through runuser when we
are root).  stop() uses `pg_ctl -m fast` by default, close() `-m immediate`
and removes everything.  `pg_server` is a session-scoped pytest fixture.
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from typing import Optional

PG_BIN_GLOB = "/usr/lib/postgresql/*/bin"


def pg_bin_dir() -> Optional[str]:
    """The newest installed PostgreSQL server binaries, or None."""
    found = sorted(glob.glob(PG_BIN_GLOB), key=lambda p: int(p.split("/")[-2]) if p.split("/")[-2].isdigit() else 0)
    found = [p for p in found if os.path.exists(os.path.join(p, "initdb"))]
    return found[-1] if found else None


def free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgServer:
    """One initdb'd cluster on 127.0.0.1:port, superuser `postgres`, trust authentication."""

    def __init__(self, port: Optional[int] = None, log_statements: bool = False) -> None:
        self.bin = pg_bin_dir()
        if self.bin is None:
            raise RuntimeError("PostgreSQL server binaries not found (apt-get install postgresql)")
        self.port = port or free_tcp_port()
        self.host = "127.0.0.1"
        self.user = "postgres"
        self.log_statements = log_statements
        self.root = tempfile.mkdtemp(prefix="pmengine-pg-")
        self.data = os.path.join(self.root, "data")
        self.sockdir = os.path.join(self.root, "sock")
        self.logfile = os.path.join(self.root, "server.log")
        self._as_postgres = os.geteuid() == 0
        os.makedirs(self.sockdir)
        if self._as_postgres:
            pw = pwd.getpwnam("postgres")
            os.chmod(self.root, 0o755)
            for path in (self.root, self.sockdir):
                os.chown(path, pw.pw_uid, pw.pw_gid)
        self.running = False

    # -- process control ------------------------------------------------------------
    def _run(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        cmd = list(args)
        if self._as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr}{proc.stdout}"
                               f"{self.server_log()[-2000:]}")
        return proc

    def init(self) -> "PgServer":
        self._run(os.path.join(self.bin, "initdb"), "-D", self.data, "-U", "postgres", "-A", "trust",
                  "-E", "UTF8", "--no-sync", "--locale=C")
        with open(os.path.join(self.data, "postgresql.conf"), "a") as conf:
            conf.write(f"listen_addresses = '127.0.0.1'\nport = {self.port}\n"
                       f"unix_socket_directories = '{self.sockdir}'\nfsync = off\n"
                       "synchronous_commit = off\nfull_page_writes = off\nmax_connections = 50\n"
                       "shared_buffers = 64MB\n")
            if self.log_statements:
                conf.write("log_statement = 'all'\n")
        return self

    def start(self, timeout: float = 30) -> None:
        self._run(os.path.join(self.bin, "pg_ctl"), "-D", self.data, "-l", self.logfile, "-w",
                  "-t", str(int(timeout)), "start", timeout=timeout + 10)
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        if self.running:
            self._run(os.path.join(self.bin, "pg_ctl"), "-D", self.data, "-m", mode, "-w", "stop", check=False)
            self.running = False

    def close(self) -> None:
        """Stop (immediate) and remove the cluster; safe to call twice."""
        try:
            self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "PgServer":
        try:
            self.init()
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def server_log(self) -> str:
        try:
            with open(self.logfile, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    # -- SQL helpers ------------------------------------------------------------------
    def dsn(self, db: str = "postgres") -> str:
        return f"host={self.host} port={self.port} user={self.user} dbname={db} connect_timeout=5"

    def connect(self, db: str = "postgres"):
        import psycopg2
        conn = psycopg2.connect(self.dsn(db))
        conn.autocommit = True
        return conn

    def execute(self, db: str, sql: str, params=None) -> None:
        conn = self.connect(db)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, params)
        finally:
            conn.close()

    def query(self, db: str, sql: str, params=None) -> list[tuple]:
        conn = self.connect(db)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, params)
                return cur.fetchall()
        finally:
            conn.close()

    def create_db(self, name: str, drop: bool = True) -> str:
        """A fresh database (dropped first if it exists); returns its name."""
        if drop:
            self.execute("postgres", f'DROP DATABASE IF EXISTS "{name}"')
        self.execute("postgres", f'CREATE DATABASE "{name}"')
        return name

    def tables(self, db: str) -> list[str]:
        return [r[0] for r in self.query(db, "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                                             "ORDER BY tablename")]


def pmacct_table_sql(version: int) -> str:
    """The CREATE TABLE statement(s) of pmacct's default table `version`, from Debian's pmacct docs.

    Only the statements creating acct* tables are kept (no DROP, GRANT or the proto table).
    """
    name = {7: "7_v8", 8: "7_v8"}.get(version, str(version))
    path = f"/usr/share/doc/pmacct/sql/pmacct-create-table_v{name}.pgsql"
    with open(path) as f:
        text = f.read()
    out = []
    for stmt in text.split(";"):
        body = "\n".join(line for line in stmt.splitlines() if not line.strip().startswith("--")).strip()
        if body.upper().startswith("CREATE TABLE ACCT"):
            out.append(body + ";")
    return "\n".join(out)


try:
    import pytest

    @pytest.fixture(scope="session")
    def pg_server():
        """A PostgreSQL server for the whole test session (skips when the binaries are missing)."""
        if pg_bin_dir() is None:
            pytest.skip("PostgreSQL server binaries not installed (apt-get install postgresql)")
        with PgServer() as pg:
            yield pg
except ImportError:          # perf scripts import this module without pytest
    pass
