"""PgBouncer in transaction mode in front of a local cluster: Supavisor's port 6543, locally.

A transaction pooler gives each client a server connection for one transaction only, from a
small pool. ``make test`` and ``make bench`` run the client through one, so that anything that
holds a server connection too long (a wait inside the database) shows up as other queries
stalling:

    python -m llm_limits.testing.pooler up --dir /tmp/x/pgbouncer --upstream URL --pool-size 8
    python -m llm_limits.testing.pooler down --dir /tmp/x/pgbouncer

``up`` prints the pooler's URL for the upstream's database; any database name works through it
(one pool of ``--pool-size`` server connections per database and user). PgBouncer refuses to run
as root, so as root it runs as the ``postgres`` user, like the cluster.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

from llm_limits.local.localstack import LocalStackError, _as_postgres, _free_port, _give_to_postgres

PGBOUNCER = os.environ.get("LLM_LIMITS_PGBOUNCER", "/usr/sbin/pgbouncer")


@dataclass(frozen=True)
class Pooler:
    root: Path

    @property
    def pid_file(self) -> Path:
        return self.root / "pgbouncer.pid"

    @property
    def url_file(self) -> Path:
        return self.root / "url"

    def url(self, dbname: str | None = None) -> str:
        try:
            url = self.url_file.read_text().strip()
        except FileNotFoundError as exc:
            raise LocalStackError(f"no pooler in {self.root}; run `up` first") from exc
        return url if dbname is None else url.rsplit("/", 1)[0] + "/" + dbname

    def pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def running(self) -> bool:
        pid = self.pid()
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def _config(root: Path, port: int, upstream: psycopg.ConnectionInfo, pool: int) -> str:
    return f"""\
[databases]
* = host={upstream.host} port={upstream.port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {root / "userlist.txt"}
admin_users = {upstream.user}
pool_mode = transaction
default_pool_size = {pool}
min_pool_size = 0
reserve_pool_size = 0
max_client_conn = 1000
max_db_connections = 0
ignore_startup_parameters = extra_float_digits,options
server_reset_query =
log_connections = 0
log_disconnections = 0
logfile = {root / "pgbouncer.log"}
pidfile = {root / "pgbouncer.pid"}
"""


def up(root: Path, upstream_url: str, pool_size: int = 8) -> Pooler:
    """Start PgBouncer (transaction mode, ``pool_size`` server connections per database)."""
    pooler = Pooler(root.resolve())
    if pooler.running():
        return pooler
    pooler.root.mkdir(parents=True, exist_ok=True)
    _give_to_postgres(pooler.root)
    with psycopg.connect(upstream_url, connect_timeout=10) as conn:
        info = conn.info
        user, dbname = info.user, info.dbname
        port = _free_port()
        (pooler.root / "userlist.txt").write_text(f'"{user}" ""\n')
        (pooler.root / "pgbouncer.ini").write_text(_config(pooler.root, port, info, pool_size))
    for name in ("userlist.txt", "pgbouncer.ini"):
        _give_to_postgres(pooler.root / name)
    _as_postgres([PGBOUNCER, "-d", "-q", str(pooler.root / "pgbouncer.ini")], check=True)
    url = f"postgresql://{user}@127.0.0.1:{port}/{dbname}"
    deadline = time.monotonic() + 15
    while True:
        try:
            with psycopg.connect(url, connect_timeout=2, prepare_threshold=None) as conn:
                conn.execute("select 1")
            break
        except psycopg.OperationalError as exc:
            if time.monotonic() > deadline:
                log = (pooler.root / "pgbouncer.log").read_text(errors="replace")[-2000:]
                raise LocalStackError(f"pgbouncer did not come up: {exc}\n{log}") from exc
            time.sleep(0.1)
    pooler.url_file.write_text(url + "\n")
    return pooler


def down(root: Path) -> None:
    """Stop the PgBouncer that ``up`` started in ``root`` (by its pid file)."""
    pooler = Pooler(root.resolve())
    pid = pooler.pid()
    if pid is None or not pooler.running():
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while pooler.running() and time.monotonic() < deadline:
        time.sleep(0.05)
    if pooler.running():
        os.kill(pid, signal.SIGKILL)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llm_limits.testing.pooler")
    parser.add_argument("action", choices=["up", "down", "url"])
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--upstream", help="URL of the cluster to pool (for up)")
    parser.add_argument("--pool-size", type=int, default=8)
    args = parser.parse_args(argv)
    try:
        if args.action == "up":
            if not args.upstream:
                parser.error("up needs --upstream")
            print(up(args.dir, args.upstream, args.pool_size).url())
        elif args.action == "down":
            down(args.dir)
        else:
            print(Pooler(args.dir.resolve()).url())
    except (LocalStackError, psycopg.Error, subprocess.SubprocessError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
