"""This worker process's liveness beat and its turn at the sweeper (``chat.recovery``).

One daemon thread, started before the worker consumes its queues and stopped at its shutdown.
Redis or PostgreSQL being down only pauses it: it logs, and tries again on the next tick.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable

from django.conf import settings
from django.db import DatabaseError, connection
from redis.exceptions import RedisError

from chat import recovery, worker_metrics, worker_registry
from tenants import webhooks

logger = logging.getLogger(__name__)

_worker_id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def worker_id() -> str:
    """This process's id as a worker: the claim it writes on the jobs it runs. New at each
    start, so a restarted worker never passes for the one that died."""
    return _worker_id


class WorkerHeartbeat(threading.Thread):
    """Beats this worker's key with its load (``status()``) and publishes its metrics with
    each beat; runs the sweeper in its turn."""

    def __init__(self, models: list[str], status: Callable[[], dict] = dict) -> None:
        super().__init__(name="autoglm-heartbeat", daemon=True)
        self.models = models
        self.status = status
        self.tick = min(settings.AUTOGLM_WORKER_TTL / 3, settings.AUTOGLM_SWEEP_INTERVAL)
        self._stopped = threading.Event()
        self._next_sweep = 0.0
        self._failing: set[str] = set()  # what is failing now: logged once per outage

    def start(self) -> None:
        self._beat()  # alive before the first job is claimed
        super().start()

    def stop(self) -> None:
        self._stopped.set()
        self.join(timeout=5)
        try:
            worker_registry.worker_gone(worker=worker_id())
            worker_metrics.withdraw(worker=worker_id())
        except RedisError:
            pass

    def run(self) -> None:
        while not self._stopped.wait(self.tick):
            self._beat()
            if time.monotonic() >= self._next_sweep:
                self._next_sweep = time.monotonic() + settings.AUTOGLM_SWEEP_INTERVAL
                self._sweep()

    def _beat(self) -> None:
        try:
            worker_registry.worker_beat(
                worker=worker_id(), models=self.models, status=self._status()
            )
            self._failing.discard("beat")
        except RedisError as exc:
            self._failed("beat", exc)
        self._publish_metrics()

    def _status(self) -> dict:
        """The load the beat carries; a failure to read it must not stop the beat (this worker
        would be taken for dead and its jobs run again elsewhere)."""
        try:
            status = self.status()
            self._failing.discard("status")
            return status
        except Exception as exc:
            self._failed("status", exc)
            return {}

    def _publish_metrics(self) -> None:
        try:
            worker_metrics.publish(worker=worker_id())
            self._failing.discard("metrics")
        except Exception as exc:  # the beat goes on without its metrics
            self._failed("metrics", exc)

    def _sweep(self) -> None:
        try:
            if recovery.sweep_turn(worker=worker_id()):
                recovery.sweep()
                webhooks.deliveries_send_due()
                webhooks.deliveries_prune()
            self._failing.discard("sweep")
        except (RedisError, DatabaseError) as exc:
            self._failed("sweep", exc)
        except Exception:
            logger.exception("sweep failed")
        finally:
            # Not held between sweeps, and fresh after PostgreSQL restarts.
            connection.close()

    def _failed(self, what: str, exc: Exception) -> None:
        if what not in self._failing:
            logger.warning("worker heartbeat: %s failed", what, extra={"error": str(exc)})
            self._failing.add(what)
