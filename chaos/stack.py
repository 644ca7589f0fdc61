"""The stack a chaos run breaks: PostgreSQL, Redis, the web and two workers, with the faults."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from devtools.processes import ROOT, Process, free_port, stop_all
from devtools.services import PostgresServer, RedisServer

MODEL = "autoglm-demo"
LOGS = ROOT / ".data" / "chaos-logs"


class ChaosStack:
    def __init__(self, workers: int = 2, concurrency: int = 8) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="autoglm-chaos-"))
        os.chmod(self.dir, 0o755)  # PostgreSQL runs as its own user
        # Durable: the restart is a crash, and a committed job must survive it.
        self.postgres = PostgresServer(self.dir / "pg", durable=True)
        self.redis = RedisServer(self.dir / "redis")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env: dict[str, str] = {}
        self.web: Process | None = None
        self.workers: list[Process] = []
        self.worker_count, self.concurrency = workers, concurrency

    def start(self) -> ChaosStack:
        self.postgres.start()
        self.redis.start()
        demo = ROOT / ".models" / "demo-tiny"
        self.env = {
            **os.environ,
            "DATABASE_URL": self.postgres.url,
            "REDIS_URL": self.redis.url,
            "SECRET_KEY": "chaos-secret-key-not-for-production",
            "HF_HUB_OFFLINE": "1",
            "PYTHONUNBUFFERED": "1",
            "AUTOGLM_MODELS": f"{MODEL}={demo}",
            "AUTOGLM_TORCH_THREADS": "1",
            "AUTOGLM_DTYPE": "float32",
            # Finished jobs' event streams expire quickly, so the soak's Redis settles.
            "AUTOGLM_STREAM_TTL": "5",
        }
        os.environ.update({k: self.env[k] for k in ("DATABASE_URL", "REDIS_URL", "SECRET_KEY")})
        os.environ["AUTOGLM_MODELS"] = self.env["AUTOGLM_MODELS"]
        python = sys.executable
        subprocess.run([python, "manage.py", "migrate", "-v0"], env=self.env, cwd=ROOT, check=True)
        subprocess.run(
            [python, "manage.py", "build_demo_model", str(demo), "--size", "tiny"],
            env=self.env,
            cwd=ROOT,
            check=False,
            stdout=subprocess.DEVNULL,
        )
        command = [python, "-m", "uvicorn", "autoglm_site.asgi:application", "--host"]
        command += ["127.0.0.1", "--port", str(self.port), "--workers", "2", "--no-access-log"]
        command += ["--lifespan", "on"]
        self.web = Process(command, env=self.env, log=self.dir / "web.log").start()
        self.web.wait_for_port(self.port, 60)
        for index in range(self.worker_count):
            self.workers.append(self._worker(index))
        for worker in self.workers:
            worker.wait_for_line(" ready.", 120)
        return self

    def _worker(self, index: int) -> Process:
        """Worker ``index``, started (each start has a log of its own: readiness is a line)."""
        command = [sys.executable, "manage.py", "worker", "--models", MODEL]
        command += ["--concurrency", str(self.concurrency), "--hostname", f"chaos{index}@%h"]
        log = self.dir / f"worker{index}-{time.monotonic_ns()}.log"
        return Process(command, env=self.env, log=log, stop_timeout=30).start()

    def _restart_worker(self, index: int) -> None:
        self.workers[index] = self._worker(index)
        self.workers[index].wait_for_line(" ready.", 120)

    # -- faults ---------------------------------------------------------------------------------

    def kill_worker(self, index: int) -> None:
        """SIGKILL a worker, then start it again (its supervisor's part)."""
        worker = self.workers[index]
        os.kill(worker.proc.pid, signal.SIGKILL)
        worker.proc.wait()
        worker.stop()  # closes its log
        self._restart_worker(index)

    def restart_redis(self, down_s: float = 3) -> None:
        self.redis.stop()
        time.sleep(down_s)
        self.redis.start()

    def restart_postgres(self) -> None:
        self.postgres.restart()

    def dead_workers(self) -> list[int]:
        """Workers that exited by themselves (a crash on an outage, say), started again."""
        dead = []
        for index, worker in enumerate(self.workers):
            if worker.proc.poll() is not None:
                dead.append(index)
                worker.stop()
                self._restart_worker(index)
        return dead

    def worker_pids(self) -> list[int]:
        return [worker.proc.pid for worker in self.workers]

    def stop(self) -> None:
        """Stop everything; the logs of the web, the workers and PostgreSQL are kept in
        LOGS (the last run's only)."""
        stop_all([*self.workers, *([self.web] if self.web else [])])
        self.redis.stop()
        self.postgres.stop()
        shutil.rmtree(LOGS, ignore_errors=True)
        LOGS.mkdir(parents=True)
        for log in [*self.dir.glob("*.log"), self.dir / "pg" / "server.log"]:
            if log.exists():
                shutil.copy(log, LOGS / log.name)
        shutil.rmtree(self.dir, ignore_errors=True)
