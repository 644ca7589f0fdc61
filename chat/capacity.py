"""Backpressure at admission: a request for a model is refused with 503 and ``retry-after``,
instead of queueing for ever, when no live worker serves the model (``model_unavailable``) or
when the model's queue is deeper than its bound (``server_overloaded``).

The bound is AUTOGLM_MAX_QUEUE_DEPTH, or by default a few batches of what the live workers run
at once (their job threads). It is a soft bound: requests admitted at the same instant each
see the depth before the others' jobs land, so it may be passed by that many.
"""

from __future__ import annotations

import math

from django.conf import settings

from autoglm_site.errors import ModelUnavailableError, ServerOverloadedError
from autoglm_site.redisconn import broker_client

from .model_status import model_serving_check
from .worker_registry import WorkerInfo, workers_serving

# With no bound set, a model's queue may hold this many times what its workers run at once.
DEFAULT_QUEUE_BATCHES = 4


def queue_depth(model: str) -> int:
    """Jobs waiting in the model's queue for a worker thread (a worker's threads take one
    message each, so the queue holds what no thread has taken)."""
    from .jobs import model_queue

    return int(broker_client().llen(model_queue(model)))


def max_queue_depth(model: str, workers: list[WorkerInfo]) -> int:
    if settings.AUTOGLM_MAX_QUEUE_DEPTH:
        return settings.AUTOGLM_MAX_QUEUE_DEPTH
    return DEFAULT_QUEUE_BATCHES * _running_at_once(workers_serving(model, workers))


def _running_at_once(serving: list[WorkerInfo]) -> int:
    """The jobs these workers run at once (their job threads)."""
    return sum(max(1, info.capacity) for info in serving)


def admission_check(*, model: str) -> None:
    """Raise when the model cannot take another job now (see the module's docstring)."""
    model_serving_check(model=model)
    serving = workers_serving(model)
    if not serving:
        raise ModelUnavailableError(
            f"No worker is serving the model '{model}' right now; retry shortly.",
            retry_after=max(1, settings.AUTOGLM_WORKER_TTL // 3),
        )
    depth, bound = queue_depth(model), max_queue_depth(model, serving)
    if depth >= bound:
        raise ServerOverloadedError(
            f"The model '{model}' has {depth} requests waiting, its limit; retry shortly.",
            retry_after=max(1, math.ceil(depth / _running_at_once(serving))),
        )
