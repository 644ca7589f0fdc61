"""What this worker records of its jobs and engines (the metrics of ``autoglm_site.metrics``):
the jobs each model has claimed, a finished generation's latencies, and the engines' gauges."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from autoglm_site import metrics
from chat.models import ChatJob

if TYPE_CHECKING:
    from engine.engine import BatchingEngine
    from engine.request import EngineHandle

_lock = threading.Lock()
_running: Counter[str] = Counter()  # model -> jobs claimed and not ended, in this process


@contextmanager
def job_running(model: str) -> Iterator[None]:
    """Count the job as running on this worker while the block runs."""
    with _lock:
        _running[model] += 1
    metrics.REQUESTS_RUNNING.labels(model=model).inc()
    try:
        yield
    finally:
        with _lock:
            _running[model] -= 1
        metrics.REQUESTS_RUNNING.labels(model=model).dec()


def running_jobs() -> dict[str, int]:
    with _lock:
        return {model: count for model, count in _running.items() if count}


def observe_generation(job: ChatJob, handle: EngineHandle, submitted_wall: float) -> None:
    """A generation's latencies. The engine stamps its handle with a monotonic clock; the job's
    rows carry wall-clock times: ``submitted_wall`` (time.time() at submission) joins them."""
    model = job.model
    if job.queued_at and job.started_at:
        queued = (job.started_at - job.queued_at).total_seconds()
        metrics.QUEUE_TIME.labels(model=model).observe(max(0.0, queued))
    admitted = job.created_at.timestamp()
    finished = handle.finished_at or time.monotonic()
    to_wall = submitted_wall - handle.submitted_at  # monotonic -> wall clock
    metrics.E2E_LATENCY.labels(model=model).observe(max(0.0, finished + to_wall - admitted))
    first = handle.first_token_at
    if first is None:
        return
    metrics.TIME_TO_FIRST_TOKEN.labels(model=model).observe(max(0.0, first + to_wall - admitted))
    result = handle.result(timeout=0)
    if result.completion_tokens > 1:
        per_token = (finished - first) / (result.completion_tokens - 1)
        metrics.TIME_PER_OUTPUT_TOKEN.labels(model=model).observe(per_token)


def watch_engine(model: str, engine: BatchingEngine) -> None:
    """Read the engine's batch and KV cache at each scrape (the gauges follow a replaced
    engine: this is called again for the new one)."""
    _PREFIX_CACHES.watch(model, engine)
    metrics.ENGINE_BATCH_SIZE.labels(model=model).set_function(lambda: engine.stats.batch_size)
    metrics.ENGINE_BATCH_CAPACITY.labels(model=model).set(engine.max_batch_size)
    metrics.KV_CACHE_USAGE.labels(model=model).set_function(lambda: kv_cache_usage(engine))


def kv_cache_usage(engine: BatchingEngine) -> float:
    return engine.stats.kv_cache_bytes / engine.max_cache_bytes if engine.max_cache_bytes else 0.0


class PrefixCacheCollector(Collector):
    """The engines' prefix cache counters (vLLM's ``prefix_cache_queries`` and ``_hits``, in
    prompt tokens; blocks evicted) and how full it is, read from their stats at each scrape.
    A replaced engine starts its counts again, which Prometheus reads as a counter reset."""

    def __init__(self) -> None:
        self._engines: dict[str, BatchingEngine] = {}

    def watch(self, model: str, engine: BatchingEngine) -> None:
        self._engines[model] = engine

    def collect(self) -> Iterator[Metric]:
        queries = CounterMetricFamily(
            "autoglm_prefix_cache_queries",
            "Prompt tokens looked up in the prefix cache.",
            labels=["model"],
        )
        hits = CounterMetricFamily(
            "autoglm_prefix_cache_hits",
            "Prompt tokens found in the prefix cache (their prefill was skipped).",
            labels=["model"],
        )
        evictions = CounterMetricFamily(
            "autoglm_prefix_cache_evictions",
            "Blocks evicted from the prefix cache to make room for new ones.",
            labels=["model"],
        )
        usage = GaugeMetricFamily(
            "autoglm_prefix_cache_usage_ratio",
            "Prefix cache in use, as a fraction of its budget (AUTOGLM_PREFIX_CACHE_MB).",
            labels=["model"],
        )
        for model, engine in list(self._engines.items()):
            stats = engine.stats
            queries.add_metric([model], stats.prefix_cache_queries)
            hits.add_metric([model], stats.prefix_cache_hits)
            evictions.add_metric([model], stats.prefix_cache_evictions)
            budget = engine.prefix_cache_bytes
            usage.add_metric([model], stats.prefix_cache_bytes / budget if budget else 0.0)
        yield from (queries, hits, evictions, usage)


_PREFIX_CACHES = PrefixCacheCollector()
REGISTRY.register(_PREFIX_CACHES)
