"""Child processes of the development tools, started and stopped one way.

A child gets its command, environment, working directory (the checkout unless told) and log
file; it is ready once a port opens or a line appears in its log; it is asked to stop (SIGTERM)
and killed (SIGKILL) when it outlives its timeout. `make test` and `make bench` start their
servers through here; `make run` leaves supervision to honcho but shares the port helpers.
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import NoReturn

ROOT = Path(__file__).resolve().parent.parent  # the checkout: manage.py, the apps, .models/


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def manage(*args: str, env: Mapping[str, str], capture: bool = True, root: Path = ROOT) -> str:
    """Run a manage.py command of the checkout (or of the one at `root`) to its end (raising if
    it fails); its stdout when captured, else it prints as it goes."""
    result = subprocess.run(
        [sys.executable, str(root / "manage.py"), *args],
        env=env,
        cwd=root,
        check=True,
        stdout=subprocess.PIPE if capture else None,
        text=True,
    )
    return result.stdout or ""


class Process:
    """One child process of a development run.

    Its stdout and stderr go to `log` (appended; discarded without one), or, with
    `pipes=True`, its stdin and stdout are text pipes for a child driven line by line.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path = ROOT,
        log: Path | None = None,
        pipes: bool = False,
        stop_timeout: float = 10,
    ) -> None:
        assert not (pipes and log), "a child driven over pipes has no log"
        self.argv = list(argv)
        self.env = env
        self.cwd = cwd
        self.log_path = log
        self.pipes = pipes
        self.stop_timeout = stop_timeout
        self.proc: subprocess.Popen | None = None
        self._log = None

    def start(self) -> Process:
        if self.pipes:
            streams = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "text": True}
        else:
            self._log = open(self.log_path, "ab") if self.log_path else None
            out = self._log or subprocess.DEVNULL
            streams = {"stdout": out, "stderr": subprocess.STDOUT}
        self.proc = subprocess.Popen(self.argv, cwd=self.cwd, env=self.env, **streams)
        return self

    def wait_for_port(self, port: int, timeout: float) -> Process:
        """Return once something listens on 127.0.0.1:`port`."""
        self._wait(lambda: port_open(port), f"listening on 127.0.0.1:{port}", timeout)
        return self

    def wait_for_line(self, text: str, timeout: float) -> Process:
        """Return once `text` appears in the log."""
        assert self.log_path is not None, "a readiness line needs a log"
        self._wait(
            lambda: text.encode() in self.log_path.read_bytes(), f"logging {text!r}", timeout
        )
        return self

    def _wait(self, ready: Callable[[], bool], what: str, timeout: float) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while not ready():
            if self.proc.poll() is not None:
                self._fail(RuntimeError(f"exited with {self.proc.returncode} before {what}"))
            if time.monotonic() > deadline:
                self._fail(TimeoutError(f"not {what} after {timeout}s"))
            time.sleep(0.1)

    def _fail(self, error: Exception) -> NoReturn:
        # The caller never gets a handle on a child that failed to start, so it is stopped here.
        self.stop()
        tail = f"\n{self.log_text()[-3000:]}" if self.log_path else ""
        raise type(error)(f"{shlex.join(self.argv)[:200]}: {error}{tail}")

    def stop(self) -> None:
        stop_all([self])

    def log_text(self) -> str:
        assert self.log_path is not None
        return self.log_path.read_text(errors="replace")


def stop_all(processes: Iterable[Process]) -> None:
    """Ask each started child to stop, in the order given, then wait for each; one that outlives
    its `stop_timeout` gets SIGKILL, and so do its descendants.

    The ask is SIGTERM, on which uvicorn, Celery and redis-server stop their own children too;
    a child driven over pipes gets the end of its stdin instead, its cue to clean up and exit.
    """
    started = [p for p in processes if p.proc is not None]
    for process in started:
        if process.proc.stdin is not None:
            process.proc.stdin.close()
        elif process.proc.poll() is None:
            process.proc.terminate()
    for process in started:
        try:
            process.proc.wait(process.stop_timeout)
        except subprocess.TimeoutExpired:
            for pid in [*_descendants(process.proc.pid), process.proc.pid]:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            process.proc.wait()
        if process.proc.stdout is not None:
            process.proc.stdout.close()
        if process._log is not None:
            process._log.close()
            process._log = None


def _descendants(pid: int) -> list[int]:
    """Children of `pid`, then theirs (Linux's /proc; none found elsewhere)."""
    children: list[int] = []
    for listing in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            children += [int(child) for child in listing.read_text().split()]
        except OSError:
            continue
    found: list[int] = []
    for child in children:
        found += [child, *_descendants(child)]
    return found
