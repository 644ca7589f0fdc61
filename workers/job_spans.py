"""A job's phases as trace spans under its Celery task's span: ``autoglm.queue_wait`` (from
admission's queueing to this worker's claim), ``autoglm.prefill`` (from its place in the
engine's batch to the first token) and ``autoglm.decode`` (first token to the end).

They are made after the fact, with explicit start and end times, from the stamps the job row
(datetimes) and the engine's handle (``time.monotonic()``) keep: the engine stays free of
OpenTelemetry, and its thread does no tracing work. With tracing off the task has no recording
span and all of this returns at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime

from opentelemetry import trace
from opentelemetry.trace import StatusCode

from chat.models import ChatJob
from engine.request import EngineHandle

tracer = trace.get_tracer("autoglm.worker")


def job_traced(job: ChatJob) -> None:
    """Name the job on the task's span, and add its wait in the queue."""
    span = trace.get_current_span()
    if not span.is_recording():
        return
    span.set_attributes(
        {
            "autoglm.job_id": str(job.id),
            "gen_ai.request.model": job.model,
            "autoglm.attempt": job.attempts,
        }
    )
    if job.queued_at is not None and job.started_at is not None:
        queued, started = _datetime_ns(job.queued_at), _datetime_ns(job.started_at)
        _span("autoglm.queue_wait", queued, started, {"autoglm.job_id": str(job.id)})


def generation_traced(job: ChatJob, handle: EngineHandle) -> None:
    """The prefill and decode spans of a generation that has ended, well or not."""
    if not trace.get_current_span().is_recording():
        return
    epoch_ns = _monotonic_to_epoch_ns()
    admitted = handle.admitted_at or handle.submitted_at  # never admitted: ended while waiting
    start, end = epoch_ns(admitted), epoch_ns(handle.finished_at or time.monotonic())
    waited_ms = round((admitted - handle.submitted_at) * 1000, 3)
    job_id = {"autoglm.job_id": str(job.id)}
    prefill = {
        **job_id,
        "gen_ai.usage.input_tokens": handle.prompt_tokens,
        "autoglm.batch_wait_ms": waited_ms,
    }
    error = handle.exception(timeout=0) if handle.done() else None
    if handle.first_token_at is None:  # it ended before its first token
        _span("autoglm.prefill", start, end, prefill, error)
        return
    first_token = epoch_ns(handle.first_token_at)
    _span("autoglm.prefill", start, first_token, prefill)
    _span("autoglm.decode", first_token, end, {**job_id, **_outcome(handle, error)}, error)


def _outcome(handle: EngineHandle, error: BaseException | None) -> dict[str, object]:
    if error is not None or not handle.done():
        return {}
    result = handle.result(timeout=0)
    return {
        "gen_ai.usage.output_tokens": result.completion_tokens,
        "gen_ai.response.finish_reasons": [result.finish_reason],
    }


def _span(
    name: str,
    start_ns: int,
    end_ns: int,
    attributes: dict | None = None,
    error: BaseException | None = None,
) -> None:
    span = tracer.start_span(name, start_time=start_ns, attributes=attributes)
    if error is not None:
        span.set_attribute("error.type", type(error).__name__)
        span.set_status(StatusCode.ERROR, str(error))
    span.end(end_time=max(start_ns, end_ns))


def _datetime_ns(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000_000)


def _monotonic_to_epoch_ns() -> Callable[[float], int]:
    """A converter of ``time.monotonic()`` stamps to epoch nanoseconds, as of now."""
    now_mono, now_ns = time.monotonic(), time.time_ns()
    return lambda stamp: now_ns - int((now_mono - stamp) * 1_000_000_000)
