"""The live workers: each worker process beats a Redis key that lives AUTOGLM_WORKER_TTL
seconds, holding what it serves and how busy it is, and is listed in one set, so that readers
(admission, ``/readyz``, ``/metrics``, the admin's Workers page) find every worker without
scanning Redis. A worker whose key expired is gone; the sweeper drops it from the set.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from django.conf import settings

from autoglm_site.redisconn import redis_client

WORKER_KEY = "autoglm:worker:{}"
WORKERS_KEY = "autoglm:workers"

# Drop the set's members whose key has expired, atomically: a worker beating meanwhile (its
# key set again) is kept.
_PRUNE = """
local gone = 0
for _, worker in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if redis.call('EXISTS', ARGV[1] .. worker) == 0 then
    redis.call('SREM', KEYS[1], worker)
    gone = gone + 1
  end
end
return gone
"""


@dataclass(frozen=True)
class WorkerInfo:
    """What a worker said at its last beat."""

    id: str
    models: list[str]
    at: float  # when it beat (its clock, epoch seconds)
    capacity: int = 0  # jobs it runs at once (its job threads)
    running: dict[str, int] = field(default_factory=dict)  # model -> jobs it has claimed
    batch: dict[str, int] = field(default_factory=dict)  # model -> sequences in the batch
    max_batch: int = 0
    kv_cache: dict[str, float] = field(default_factory=dict)  # model -> fraction in use

    @property
    def seconds_since_beat(self) -> float:
        return max(0.0, time.time() - self.at)


def worker_beat(
    *, worker: str, models: list[str], status: dict | None = None, ttl: int | None = None
) -> None:
    """Say that ``worker`` is alive for another ``ttl`` (AUTOGLM_WORKER_TTL) seconds, serving
    ``models``; ``status`` adds its load (WorkerInfo's other fields)."""
    info = {**(status or {}), "models": models, "at": time.time()}
    ttl = ttl or settings.AUTOGLM_WORKER_TTL
    with redis_client().pipeline(transaction=False) as pipe:
        pipe.set(WORKER_KEY.format(worker), json.dumps(info), ex=ttl)
        pipe.sadd(WORKERS_KEY, worker)
        pipe.execute()


def worker_gone(*, worker: str) -> None:
    """A worker that stops cleanly (its jobs have ended) says so at once."""
    with redis_client().pipeline(transaction=False) as pipe:
        pipe.delete(WORKER_KEY.format(worker))
        pipe.srem(WORKERS_KEY, worker)
        pipe.execute()


def live_workers() -> list[WorkerInfo]:
    """The workers beating now, by id."""
    client = redis_client()
    ids = sorted(client.smembers(WORKERS_KEY))
    if not ids:
        return []
    beats = client.mget([WORKER_KEY.format(worker) for worker in ids])
    known = {name for name in WorkerInfo.__dataclass_fields__} - {"id"}
    return [
        WorkerInfo(id=worker, **{k: v for k, v in json.loads(beat).items() if k in known})
        for worker, beat in zip(ids, beats, strict=True)
        if beat is not None
    ]


def workers_serving(model: str, workers: list[WorkerInfo] | None = None) -> list[WorkerInfo]:
    return [
        info for info in (live_workers() if workers is None else workers) if model in info.models
    ]


def prune_gone_workers() -> int:
    """Drop the workers whose key expired from the set; how many (the sweeper calls this)."""
    return int(redis_client().eval(_PRUNE, 1, WORKERS_KEY, WORKER_KEY.format("")))
