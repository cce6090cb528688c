"""An embedded PostgreSQL 15 cluster shaped like a hosted Supabase project.

``make test``, ``make demo`` and ``llm-limits local`` all start their database
through this one module, so there is a single way to get a Supabase-like
Postgres on a machine without Docker:

    python -m llm_limits.local.localstack up --dir ./.llm-limits/pg   # prints the URL
    python -m llm_limits.local.localstack down --dir ./.llm-limits/pg

The cluster listens on 127.0.0.1 only, trusts local connections (it is a
throwaway), and is migrated with the real Supabase CLI (``supabase db push``).

Run as root, the server runs as ``postgres``, which must be able to enter the
cluster's directory. A checkout the ``postgres`` user cannot reach (root's home,
any 0700 directory) is not loosened: the cluster lives under ``PG_HOME``
(``/var/tmp/llm-limits/<hash of the path>``, 0700, owned by postgres) and the
requested directory becomes a symlink to it.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

PG_BIN = Path(os.environ.get("LLM_LIMITS_PG_BIN", "/usr/lib/postgresql/15/bin"))
DEFAULT_DIR = Path(".llm-limits/pg")
# Where a cluster goes when the server user cannot reach the requested directory.
PG_HOME = Path(os.environ.get("LLM_LIMITS_PG_HOME", "/var/tmp/llm-limits"))


class LocalStackError(RuntimeError):
    """The local cluster could not be started, migrated or stopped."""


@dataclass(frozen=True)
class LocalCluster:
    root: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def port_file(self) -> Path:
        return self.root / "port"

    @property
    def log(self) -> Path:
        return self.root / "postgres.log"

    @property
    def port(self) -> int:
        try:
            return int(self.port_file.read_text().strip())
        except FileNotFoundError as exc:
            raise LocalStackError(f"no cluster in {self.root}; run `up` first") from exc

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def running(self) -> bool:
        if not (self.data / "PG_VERSION").exists():
            return False
        return (
            _as_postgres([str(PG_BIN / "pg_ctl"), "status", "-D", str(self.data)]).returncode == 0
        )


def _as_postgres(cmd: list[str], check: bool = False) -> subprocess.CompletedProcess[str]:
    # The server refuses to run as root; on a bare CI machine we are root.
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise LocalStackError(f"{' '.join(cmd)} failed:\n{proc.stdout}{proc.stderr}")
    return proc


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _give_to_postgres(path: Path) -> None:
    if os.geteuid() == 0:
        shutil.chown(path, "postgres", "postgres")


def _postgres_can_enter(path: Path) -> bool:
    """Whether the server user can reach ``path`` (or the nearest ancestor that exists)."""
    if os.geteuid() != 0:
        return True  # the server runs as us
    while not path.exists() and path != path.parent:
        path = path.parent
    return _as_postgres(["test", "-x", str(path)]).returncode == 0


def _place(root: Path) -> Path:
    """The directory the cluster really lives in: ``root``, or a reachable one it links to."""
    root = root.absolute()
    if root.is_symlink() or _postgres_can_enter(root):
        return root.resolve()
    if root.exists():
        if any(root.iterdir()):
            raise LocalStackError(
                f"{root} is not reachable by the postgres user and is not empty; "
                "remove it or pass a --dir the postgres user can enter"
            )
        root.rmdir()  # left empty by an earlier attempt that failed at initdb
    target = PG_HOME / hashlib.sha256(str(root).encode()).hexdigest()[:16]
    if not PG_HOME.exists():
        PG_HOME.mkdir(parents=True)
        os.chmod(PG_HOME, 0o755)  # postgres must enter it; only root may write in it
    target.mkdir(mode=0o700, exist_ok=True)
    _give_to_postgres(target)
    root.parent.mkdir(parents=True, exist_ok=True)
    root.symlink_to(target, target_is_directory=True)
    return target


def up(root: Path, settings: dict[str, str] | None = None) -> LocalCluster:
    """Start (creating if needed) the cluster in ``root``; idempotent."""
    cluster = LocalCluster(root.resolve())
    if cluster.running():
        return cluster
    cluster = LocalCluster(_place(root))
    cluster.root.mkdir(parents=True, exist_ok=True)
    _give_to_postgres(cluster.root)
    if not (cluster.data / "PG_VERSION").exists():
        _as_postgres(
            [
                str(PG_BIN / "initdb"),
                "-D",
                str(cluster.data),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
            ],
            check=True,
        )
    port = _free_port()
    cluster.port_file.write_text(f"{port}\n")
    options = {
        "port": str(port),
        "listen_addresses": "127.0.0.1",
        "unix_socket_directories": str(cluster.root),
        "max_connections": "200",
        "fsync": "on",
    }
    options.update(settings or {})
    opt_string = " ".join(f"-c {k}={v}" for k, v in options.items())
    _as_postgres(
        [
            str(PG_BIN / "pg_ctl"),
            "start",
            "-w",
            "-t",
            "60",
            "-D",
            str(cluster.data),
            "-l",
            str(cluster.log),
            "-o",
            opt_string,
        ],
        check=True,
    )
    bootstrap(cluster.url())
    return cluster


def bootstrap(url: str) -> None:
    """Recreate what a hosted Supabase project has before our migrations."""
    sql = resources.files("llm_limits.local").joinpath("supabase_hosted.sql").read_text()
    psql(url, sql)


def psql(url: str, sql: str) -> str:
    proc = subprocess.run(
        ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-At", url],
        input=sql,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise LocalStackError(f"psql failed: {proc.stderr.strip()}")
    return proc.stdout


def supabase_cli(project_dir: Path) -> list[str]:
    """The pinned Supabase CLI from package-lock.json (``npm ci`` installs it)."""
    local = project_dir / "node_modules" / ".bin" / "supabase"
    if local.exists():
        return [str(local)]
    found = shutil.which("supabase")
    if found:
        return [found]
    raise LocalStackError("the Supabase CLI is not installed; run `npm ci` in the repository")


def push(url: str, project_dir: Path, cli_from: Path | None = None) -> str:
    """Apply supabase/migrations with the real deploy path, ``supabase db push``.

    ``cli_from`` is the checkout whose node_modules holds the CLI, when ``project_dir`` is a
    copy of some migrations elsewhere (the upgrade tests).
    """
    proc = subprocess.run(
        [
            *supabase_cli(cli_from or project_dir),
            "db",
            "push",
            f"--remote={url}",
            "--yes",
            "--workdir",
            str(project_dir),
        ],
        capture_output=True,
        text=True,
        cwd=project_dir,
    )
    if proc.returncode != 0:
        raise LocalStackError(f"supabase db push failed:\n{proc.stdout}{proc.stderr}")
    return proc.stdout + proc.stderr


def down(root: Path, remove: bool = False) -> None:
    cluster = LocalCluster(root.resolve())
    if cluster.running():
        _as_postgres(
            [str(PG_BIN / "pg_ctl"), "stop", "-w", "-m", "fast", "-D", str(cluster.data)],
            check=True,
        )
    if remove and cluster.root.exists():
        shutil.rmtree(cluster.root)
    if remove and root.is_symlink():
        root.unlink()  # the link _place left in an unreachable checkout


def restart(cluster: LocalCluster) -> None:
    """``pg_ctl restart -m fast``, as an operator restarts a database: every backend is
    terminated (57P01), and the server comes back on its port with the options it ran with."""
    data, log = str(cluster.data), str(cluster.log)
    cmd = ["restart", "-w", "-t", "60", "-D", data, "-l", log, "-m", "fast"]
    _as_postgres([str(PG_BIN / "pg_ctl"), *cmd], check=True)


def stop(cluster: LocalCluster, mode: str = "fast") -> None:
    """``pg_ctl stop -m mode`` (``immediate`` is a crash: no checkpoint, recovery at start)."""
    cmd = ["stop", "-w", "-D", str(cluster.data), "-m", mode]
    _as_postgres([str(PG_BIN / "pg_ctl"), *cmd], check=True)


def start_again(cluster: LocalCluster) -> None:
    """Start a stopped cluster on the port and options it last ran with (postmaster.opts)."""
    argv = shlex.split((cluster.data / "postmaster.opts").read_text())[1:]
    if "-D" in argv:
        i = argv.index("-D")
        del argv[i : i + 2]
    data, log = str(cluster.data), str(cluster.log)
    cmd = ["start", "-w", "-t", "60", "-D", data, "-l", log, "-o", shlex.join(argv)]
    _as_postgres([str(PG_BIN / "pg_ctl"), *cmd], check=True)


def create_database(cluster: LocalCluster, name: str) -> str:
    """A fresh database in the cluster, bootstrapped like a Supabase project."""
    psql(cluster.url(), f'drop database if exists "{name}" with (force); create database "{name}";')
    url = cluster.url(name)
    bootstrap(url)
    return url


def wait_ready(cluster: LocalCluster, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (
            subprocess.run(
                [str(PG_BIN / "pg_isready"), "-h", "127.0.0.1", "-p", str(cluster.port)],
                capture_output=True,
            ).returncode
            == 0
        ):
            return
        time.sleep(0.2)
    raise LocalStackError("the cluster did not become ready")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llm_limits.local.localstack")
    parser.add_argument("action", choices=["up", "down", "destroy", "url", "status", "push"])
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--project", type=Path, default=Path.cwd())
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra server setting, e.g. shared_preload_libraries=pg_cron",
    )
    args = parser.parse_args(argv)
    try:
        if args.action == "up":
            settings = dict(s.split("=", 1) for s in args.set)
            cluster = up(args.dir, settings)
            print(cluster.url())
        elif args.action == "push":
            print(push(LocalCluster(args.dir.resolve()).url(), args.project), end="")
        elif args.action in ("down", "destroy"):
            down(args.dir, remove=args.action == "destroy")
        elif args.action == "url":
            print(LocalCluster(args.dir.resolve()).url())
        else:
            cluster = LocalCluster(args.dir.resolve())
            print("running" if cluster.running() else "stopped")
            return 0 if cluster.running() else 3
    except LocalStackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
