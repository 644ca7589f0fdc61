"""The worker process's resident models and their batching engines.

Imported only by worker code: it pulls in torch. One registry and, per model, one engine thread
that batches every job of this process; Celery's threads submit to it and wait.
"""

from __future__ import annotations

import logging
import threading

from django.conf import settings

from chat.model_status import model_refused, model_served
from engine.engine import BatchingEngine
from engine.registry import LoadedModel, ModelRegistry

from .job_metrics import kv_cache_usage, running_jobs, watch_engine
from .jobstreams import CancelListener, TokenPublisher

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_registry: ModelRegistry | None = None
_engines: dict[str, BatchingEngine] = {}
_publisher: TokenPublisher | None = None
_cancels: CancelListener | None = None


def get_registry() -> ModelRegistry:
    """The process-wide registry, made on first use (tasks run on several threads)."""
    global _registry
    if _registry is None:
        with _lock:
            if _registry is None:
                _registry = ModelRegistry(
                    dict(settings.AUTOGLM_MODELS),
                    device=settings.AUTOGLM_DEVICE,
                    dtype=settings.AUTOGLM_DTYPE,
                    torch_threads=settings.AUTOGLM_TORCH_THREADS,
                    cache_dir=settings.AUTOGLM_MODEL_CACHE,
                )
    return _registry


def get_engine(name: str) -> tuple[LoadedModel, BatchingEngine]:
    """The model and its running engine; an engine that died is replaced by a fresh one."""
    loaded = get_registry().get(name)
    engine = _engines.get(name)
    if engine is not None and engine.alive:
        return loaded, engine
    with _lock:
        engine = _engines.get(name)
        if engine is None or not engine.alive:
            if engine is not None:
                logger.error(
                    "engine died, starting a new one",
                    extra={"model": name, "reason": engine.dead_reason},
                )
            engine = BatchingEngine(
                loaded,
                max_batch_size=settings.AUTOGLM_MAX_BATCH_SIZE,
                max_batch_tokens=settings.AUTOGLM_MAX_BATCH_TOKENS,
                max_prefill_tokens=settings.AUTOGLM_MAX_PREFILL_TOKENS,
                max_cache_bytes=settings.AUTOGLM_KV_CACHE_MB * 2**20,
                prefix_cache_bytes=settings.AUTOGLM_PREFIX_CACHE_MB * 2**20,
                on_dead=lambda exc: logger.critical(
                    "engine crashed", extra={"model": name, "error": repr(exc)}
                ),
            )
            engine.start()
            watch_engine(name, engine)
            _engines[name] = engine
    return loaded, engine


def publisher() -> TokenPublisher:
    global _publisher
    if _publisher is None:
        with _lock:
            if _publisher is None:
                _publisher = TokenPublisher()
    return _publisher


def cancels() -> CancelListener:
    global _cancels
    if _cancels is None:
        with _lock:
            if _cancels is None:
                _cancels = CancelListener()
    return _cancels


def preload(models: list[str]) -> list[str]:
    """Load the worker's models and start their engines before it takes jobs; returns the
    models it can serve.

    A model that fails to load (missing files, or one the engine cannot serve exactly) is
    refused: logged with the reason and recorded for the web (``chat.model_status``), which
    then answers its requests 503 instead of queueing them.
    """
    publisher()
    cancels()
    served = []
    for name in models:
        try:
            get_engine(name)
        except Exception as exc:
            logger.critical(
                "cannot serve model %r: %s", name, exc, extra={"model": name}, exc_info=True
            )
            model_refused(model=name, reason=str(exc))
            continue
        model_served(model=name)
        served.append(name)
    return served


def worker_status(capacity: int) -> dict:
    """This worker's load, for its heartbeat (``chat.worker_registry.WorkerInfo``)."""
    engines = dict(_engines)
    return {
        "capacity": capacity,
        "running": running_jobs(),
        "batch": {name: engine.stats.batch_size for name, engine in engines.items()},
        "max_batch": settings.AUTOGLM_MAX_BATCH_SIZE,
        "kv_cache": {name: round(kv_cache_usage(engine), 4) for name, engine in engines.items()},
    }


def shutdown(timeout: float = 60.0) -> None:
    """Stop the engines, letting jobs in flight finish first (warm shutdown)."""
    for name, engine in list(_engines.items()):
        logger.info("stopping engine", extra={"model": name})
        engine.stop(drain=True, timeout=timeout)
