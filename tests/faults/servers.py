"""A Redis and a PostgreSQL server of the caller's own, on free loopback ports, that may be killed and started
again (the shared ones on 6379 and 5432 are never touched).

PostgreSQL refuses to run as root: as root, its commands run as the ``postgres`` OS user (``runuser``), with
the data folder handed to that user.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from deployment import free_port, wait_for
from services import port_open

__all__ = ["OwnRedis", "OwnPostgres", "postgres_bin_dir", "redis_server_path"]


def redis_server_path() -> str | None:
    return shutil.which("redis-server")


def postgres_bin_dir() -> Path | None:
    """The newest PostgreSQL install's bin folder holding pg_ctl and initdb (Debian's layout), or PATH's."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    pg_ctl = shutil.which("pg_ctl")
    return Path(pg_ctl).parent if pg_ctl else None


@dataclass
class OwnRedis:
    """``redis-server`` keeping nothing on disk: a kill -9 loses every queued message, as in production
    without persistence."""

    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        server = redis_server_path()
        assert server, "redis-server is not installed"
        self.process = subprocess.Popen([server, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                         "--appendonly", "no"], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        wait_for(lambda: port_open("127.0.0.1", self.port), 10, f"redis-server on port {self.port}")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        self.kill()


@dataclass
class OwnPostgres:
    """A PostgreSQL cluster in a temporary folder (trust authentication, no fsync: it is thrown away)."""

    port: int = field(default_factory=free_port)
    folder: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="comfygate-pg-")))

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def database_url(self, name: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"

    def _run(self, *args: str) -> None:
        bin_dir = postgres_bin_dir()
        assert bin_dir, "PostgreSQL's server programs (pg_ctl, initdb) are not installed"
        command = [str(bin_dir / args[0]), *args[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    def init(self) -> None:
        if os.geteuid() == 0:
            self.folder.chmod(0o755)
            shutil.chown(self.folder, "postgres", "postgres")
        self._run("initdb", "-D", str(self.folder / "data"), "--auth=trust", "--username=postgres", "--no-sync")

    def start(self) -> None:
        # fsync off only risks data on an OS crash; commits stay synchronous, so a server killed at once keeps
        # every transaction it acknowledged (as a real one does).
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.folder} -c fsync=off"
        self._run("pg_ctl", "-D", str(self.folder / "data"), "-o", options, "-l", str(self.folder / "server.log"),
                  "-w", "start")

    def kill(self) -> None:
        """Stop at once, as in a crash: no checkpoint, every connection cut."""
        self._run("pg_ctl", "-D", str(self.folder / "data"), "-m", "immediate", "-w", "stop")

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.database_url(name)

    def stop(self) -> None:
        if (self.folder / "data" / "postmaster.pid").exists():
            self.kill()
        shutil.rmtree(self.folder, ignore_errors=True)
