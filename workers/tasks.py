"""Celery tasks: thin interfaces that take ids and call services.

This module is imported by web processes (to enqueue), so torch is imported only inside the
task body, which runs in workers alone.
"""

import logging
import threading
import time

from celery import shared_task
from django.conf import settings
from django.db import close_old_connections

from autoglm_site.tracing import trace_id_var
from chat import events
from chat.models import ChatJob
from chat.services import (
    job_budget,
    job_fail,
    job_finish,
    job_lease_renew,
    job_prompt_messages,
    job_start,
)
from tenants.quotas import QuotaExceededError

logger = logging.getLogger(__name__)

Code = ChatJob.ErrorCode


@shared_task(name="workers.chat_job_run", acks_late=True, reject_on_worker_lost=True)
def chat_job_run(job_id: str) -> None:
    """Generate the answer of one chat job, streaming it as job events, and store it."""
    job = job_start(job_id=job_id)
    if job is None:
        logger.info("job already finished, skipping", extra={"job_id": job_id})
        return
    token = trace_id_var.set(job.trace_id)
    try:
        _run(job)
    except Exception:
        # Whatever broke, the job must not stay "running": fail it with a reason. The
        # traceback goes to the worker log, not to the client.
        logger.exception("job crashed", extra={"job_id": job_id})
        job_fail(job=job, reason="The worker hit an internal error while generating.")
    finally:
        trace_id_var.reset(token)


def _run(job) -> None:
    from engine.errors import EngineDeadError, GenerationError, JobTimeoutError, PromptTooLongError
    from engine.registry import UnknownModelError
    from engine.request import EngineRequest

    from .prompts import encode_prompt, fit_messages
    from .runtime import cancels, get_engine, publisher

    params = job.params
    job_id = str(job.id)
    logger.info(
        "job running", extra={"job_id": job_id, "model": job.model, "attempt": job.attempts}
    )
    try:
        loaded, engine = get_engine(job.model)
    except (UnknownModelError, OSError):
        logger.exception("model unavailable", extra={"job_id": job_id, "model": job.model})
        job_fail(job=job, reason=f"The model '{job.model}' could not be loaded on the worker.")
        return
    if job.attempts > 1:
        # A redelivered job starts over: tell listeners to drop what the first attempt sent.
        events.publish(job.id, events.RESET, {"attempt": job.attempts})
    cancels().watch(job_id)
    stream = publisher()
    try:
        messages, dropped = job_prompt_messages(job=job), 0
        if job.session_id is not None:
            messages, dropped = fit_messages(loaded, messages, max_tokens=params["max_tokens"])
        prompt_ids = encode_prompt(loaded, messages)
        max_tokens = job_budget(
            job=job, prompt_tokens=len(prompt_ids), max_tokens=params["max_tokens"]
        )
        handle = engine.submit(
            EngineRequest(
                prompt_ids=prompt_ids,
                max_tokens=max_tokens,
                temperature=params.get("temperature", 1.0),
                top_p=params.get("top_p", 1.0),
                seed=params.get("seed"),
                stop=params.get("stop") or (),
                on_text=lambda text: _publish_text(stream, job_id, text),
                should_stop=_Heartbeat(job),
                timeout=settings.AUTOGLM_JOB_TIMEOUT,
            )
        )
        # A job generates for seconds or minutes: it must not hold one of the database's
        # connections meanwhile (a worker runs up to a batch of jobs at once).
        close_old_connections()
        result = handle.result()
    except PromptTooLongError as exc:
        job_fail(job=job, reason=str(exc), code=Code.CONTEXT_LENGTH_EXCEEDED)
        return
    except QuotaExceededError as exc:
        job_fail(job=job, reason=exc.message, code=Code.INSUFFICIENT_QUOTA)
        return
    except JobTimeoutError as exc:
        stream.flush()
        job_fail(job=job, reason=str(exc), code=Code.TIMEOUT)
        return
    except GenerationError as exc:
        job_fail(job=job, reason=str(exc), code=Code.INVALID_REQUEST)
        return
    except EngineDeadError as exc:
        logger.error("engine died under the job", extra={"job_id": job_id, "reason": exc.reason})
        job_fail(
            job=job, reason="The worker's engine failed; please retry.", code=Code.ENGINE_ERROR
        )
        return
    finally:
        cancels().forget(job_id)
    stream.flush()  # every token is in the stream before the final event
    job_finish(
        job=job,
        text=_printable(result.text),
        prompt_tokens=result.prompt_tokens,
        completion_tokens=result.completion_tokens,
        finish_reason=result.finish_reason,
        dropped_messages=dropped,
    )


def _printable(text: str) -> str:
    # A model can emit NUL, which PostgreSQL cannot store and JSON clients choke on.
    return text.replace("\x00", "")


def _publish_text(stream, job_id: str, text: str) -> None:
    text = _printable(text)
    if text:
        stream.publish(job_id, text)


class _Heartbeat:
    """Called by the engine once per decode step: renews the job's concurrency lease now and
    then, and says whether someone asked to cancel the job."""

    def __init__(self, job) -> None:
        self.job = job
        self.job_id = str(job.id)
        self.every = settings.AUTOGLM_LEASE_TTL / 3
        self.next_renewal = time.monotonic() + self.every

    def __call__(self) -> bool:
        from .runtime import cancels

        if time.monotonic() >= self.next_renewal:
            self.next_renewal = time.monotonic() + self.every
            # Off the engine thread: a Redis round trip must not stall the batch.
            threading.Thread(target=job_lease_renew, kwargs={"job": self.job}, daemon=True).start()
        return cancels().is_cancelled(self.job_id)
