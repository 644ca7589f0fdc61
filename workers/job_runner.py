"""Runs one chat job on this worker: load job + history -> prompt -> budget -> submit -> wait ->
persist, each phase a small function below.

Django state (the job's row, its quotas) is read and written through ``chat.jobs``; generation
goes through an engine that only has to ``submit`` a request and hand back something to wait
on. The modules that import torch (the registry, the runtime, the prompts) are imported inside
the functions that use them: importing this module (and ``workers.tasks``) stays light.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import InterfaceError, OperationalError, close_old_connections, connection
from django.utils import timezone
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from autoglm_site.retrying import retry_through_outage
from autoglm_site.tracing import trace_id_var
from chat import events, jobs
from chat.model_status import model_refused
from chat.models import ChatJob
from engine.errors import EngineDeadError, GenerationError, JobTimeoutError, PromptTooLongError
from engine.request import Engine, EngineHandle
from engine.result import GenerationResult
from tenants.quotas import QuotaExceededError

from . import job_spans
from .answer_stages import PluginStageError
from .choices import ChoiceRun, combined, printable
from .heartbeat import worker_id
from .job_metrics import job_running, observe_generation

if TYPE_CHECKING:
    from engine.registry import LoadedModel

    from .jobstreams import TokenPublisher

logger = logging.getLogger(__name__)

Code = ChatJob.ErrorCode


# What an outage of PostgreSQL or Redis raises in a job's run.
OUTAGES = (OperationalError, InterfaceError, RedisConnectionError, RedisTimeoutError)


class ModelUnavailableError(Exception):
    """The job's model could not be loaded on this worker."""


def job_run(*, job_id: str) -> None:
    """Generate the answer of one chat job, streaming it as job events, and store it."""
    job = jobs.job_start(job_id=job_id, worker=worker_id())
    if job is None:
        logger.info(
            "job not queued (ended, or claimed already), skipping", extra={"job_id": job_id}
        )
        return
    token = trace_id_var.set(job.trace_id)
    job_spans.job_traced(job)
    try:
        with job_running(job.model):
            _run(job)
    except OUTAGES as exc:
        # Redis or PostgreSQL went away under the job (a restart, a failover): run it again
        # from the start once they are back, rather than fail it for the outage.
        logger.warning("job cut off by an outage", extra={"job_id": job_id, "error": str(exc)})
        connection.close()
        _stored(lambda: _run_again_or_fail(job))
    except Exception:
        # Whatever broke, the job must not stay "running": fail it with a reason. The
        # traceback goes to the worker log, not to the client.
        logger.exception("job crashed", extra={"job_id": job_id})
        reason = "The worker hit an internal error while generating."
        _stored(lambda: jobs.job_fail(job=job, reason=reason, attempt=job.attempts))
    finally:
        trace_id_var.reset(token)


def _run_again_or_fail(job: ChatJob) -> None:
    if job.attempts < settings.AUTOGLM_MAX_ATTEMPTS:
        jobs.job_requeue(job=job, why="an outage cut it off")
    else:
        reason = "The job was cut off by outages of the service's database or Redis."
        jobs.job_fail(job=job, reason=reason, attempt=job.attempts)


def _run(job: ChatJob) -> None:
    from .runtime import publisher

    logger.info(
        "job running", extra={"job_id": str(job.id), "model": job.model, "attempt": job.attempts}
    )
    stream = publisher()
    try:
        result, dropped, choices, first_token_at = _generate(job, stream)
    except Exception as exc:
        failure = _failure(exc)
        if failure is None:
            raise
        if isinstance(exc, EngineDeadError):
            logger.error(
                "engine died under the job", extra={"job_id": str(job.id), "reason": exc.reason}
            )
        code, reason, tokens_out = failure
        if tokens_out:
            stream.flush()  # every token is in the stream before the error event
        produced = _produced(exc)
        _stored(
            lambda: jobs.job_fail(
                job=job, reason=reason, code=code, produced=produced, attempt=job.attempts
            )
        )
        return
    stream.flush()  # every token is in the stream before the final event
    _persist(job, result, dropped, choices, first_token_at)


def _generate(
    job: ChatJob, stream: TokenPublisher
) -> tuple[GenerationResult, int, list[dict], datetime | None]:
    """The job's answer, how many session messages were left out to fit the context, every
    choice as stored (empty for one answer without logprobs), and when its first token came."""
    from .runtime import cancels

    loaded, engine = _load_engine(job)
    if job.attempts > 1:
        # A redelivered job starts over: tell listeners to drop what the first attempt sent.
        events.publish(job.id, *events.reset_event(job.attempts))
    job_id = str(job.id)
    cancels().watch(job_id)
    try:
        messages, dropped = _prompt(job, loaded)
        prompt_ids = _encode(loaded, job, messages)
        n = job.params.get("n") or 1
        max_tokens = _budget(job, prompt_ids, n)
        runs = [ChoiceRun(job, index, stream, loaded) for index in range(n)]
        submitted_wall = time.time()
        handles = _submit(job, engine, prompt_ids, max_tokens, runs)
        try:
            results = _wait(handles)
        finally:
            job_spans.generation_traced(job, handles[0])
        observe_generation(job, handles[0], submitted_wall)
        results = [run.finished(result) for run, result in zip(runs, results, strict=True)]
        kept = []
        if n > 1 or runs[0].keeps_logprobs:
            kept = [run.stored(result) for run, result in zip(runs, results, strict=True)]
        return combined(results), dropped, kept, _wall_clock(handles[0].first_token_at)
    finally:
        cancels().forget(job_id)


# -- the phases --------------------------------------------------------------------------------


def _load_engine(job: ChatJob) -> tuple[LoadedModel, Engine]:
    from engine.registry import UnknownModelError

    from .runtime import get_engine

    try:
        return get_engine(job.model)
    except (UnknownModelError, OSError, ValueError) as exc:
        # Missing files, an unreadable config, or a model the engine cannot serve exactly
        # (UnsupportedModelError is a ValueError): the next requests are refused up front.
        logger.exception("model unavailable", extra={"job_id": str(job.id), "model": job.model})
        model_refused(model=job.model, reason=str(exc))
        raise ModelUnavailableError(
            f"The model '{job.model}' could not be loaded on the worker: {exc}"
        ) from exc


def _prompt(job: ChatJob, loaded: LoadedModel) -> tuple[list[dict[str, str]], int]:
    """The conversation to answer, and how many of the session's oldest messages were left
    out to fit the context window (a completion's own messages are never trimmed)."""
    from .prompts import fit_messages

    messages = jobs.job_prompt_messages(job=job)
    if job.session_id is None:
        return messages, 0
    return fit_messages(
        loaded,
        messages,
        max_tokens=job.params["max_tokens"],
        tools=job.params.get("tools"),
        continue_final=bool(job.params.get("continue_final_message")),
    )


def _encode(loaded: LoadedModel, job: ChatJob, messages: list[dict]) -> list[int]:
    """The prompt's token ids: the messages in the chat template, or a legacy completion's own
    prompt as it is (its ids as given: the engine checks them against the vocabulary). A job
    that continues an answer ends its prompt inside that answer (no end of turn after it)."""
    from .prompts import encode_prompt, encode_text

    if "prompt_ids" in job.params:
        return list(job.params["prompt_ids"])
    if "prompt" in job.params:
        return encode_text(loaded, job.params["prompt"])
    return encode_prompt(
        loaded,
        messages,
        tools=job.params.get("tools"),
        continue_final=bool(job.params.get("continue_final_message")),
    )


def _budget(job: ChatJob, prompt_ids: list[int], n: int) -> int:
    """Each choice's max_tokens: all n of them fit what the job holds against the quotas."""
    allowed = jobs.job_budget(
        job=job, prompt_tokens=len(prompt_ids), max_tokens=job.params["max_tokens"] * n
    )
    return max(allowed // n, 1)


def _submit(
    job: ChatJob,
    engine: Engine,
    prompt_ids: list[int],
    max_tokens: int,
    runs: list[ChoiceRun],
) -> list[EngineHandle]:
    heartbeat, timeout = _Heartbeat(job), _time_left(job)
    requests = [run.request(prompt_ids, max_tokens, heartbeat, timeout) for run in runs]
    if len(requests) == 1:
        return [engine.submit(requests[0])]
    return engine.submit_choices(requests)


def _time_left(job: ChatJob) -> float:
    """The job's AUTOGLM_JOB_TIMEOUT counts from its admission: time queued is spent too."""
    spent = (timezone.now() - job.created_at).total_seconds()
    left = settings.AUTOGLM_JOB_TIMEOUT - spent
    if left <= 0:
        nothing = GenerationResult(
            text="", prompt_tokens=0, completion_tokens=0, finish_reason="cancelled"
        )
        raise JobTimeoutError(settings.AUTOGLM_JOB_TIMEOUT, nothing)
    return left


def _wait(handles: list[EngineHandle]) -> list[GenerationResult]:
    # A job generates for seconds or minutes: it must not hold one of the database's
    # connections meanwhile (a worker runs up to a batch of jobs at once).
    close_old_connections()
    try:
        return [handle.result() for handle in handles]
    except BaseException:
        for handle in handles:  # one choice failed the job: the others stop too
            handle.cancel()
        raise


def _wall_clock(monotonic_at: float | None) -> datetime | None:
    """A ``time.monotonic()`` stamp of the engine's (a moment just past) as a datetime."""
    if monotonic_at is None:
        return None
    return timezone.now() - timedelta(seconds=max(time.monotonic() - monotonic_at, 0.0))


def _persist(
    job: ChatJob,
    result: GenerationResult,
    dropped: int,
    choices: list[dict] | None = None,
    first_token_at: datetime | None = None,
) -> None:
    _stored(
        lambda: jobs.job_finish(
            job=job,
            first_token_at=first_token_at,
            text=printable(result.text),
            choices=choices,
            prompt_tokens=result.prompt_tokens,
            completion_tokens=result.completion_tokens,
            cached_tokens=result.cached_tokens,
            finish_reason=result.finish_reason,
            dropped_messages=dropped,
        )
    )


def _stored(write: Callable[[], object]) -> None:
    """Run a job's final write, again and again while the database is unreachable (restarting,
    failing over): a job whose answer is done must not stay ``running`` because one write
    failed. Each try is its own transaction on a fresh connection; the write is idempotent (a
    finished job is left as it is)."""

    def fresh_connection(exc: BaseException, delay: float) -> None:
        logger.warning(
            "database unavailable for a job's final write; retrying",
            extra={"error": str(exc), "retry_in_s": delay},
        )
        connection.close()

    retry_through_outage(
        write, errors=(OperationalError, InterfaceError), before_retry=fresh_connection
    )


# -- how a job fails ---------------------------------------------------------------------------


# What ends a job, and how: its error code, the reason a client reads, and whether tokens may
# already be out (then they are flushed before the error event). First match wins:
# JobTimeoutError and PromptTooLongError are GenerationErrors.
_ENGINE_DEAD_REASON = "The worker's engine failed; please retry."
FAILURES: list[tuple[type[Exception], Code, Callable[[Any], str], bool]] = [
    (ModelUnavailableError, Code.MODEL_UNAVAILABLE, str, False),
    (PromptTooLongError, Code.CONTEXT_LENGTH_EXCEEDED, str, False),
    (QuotaExceededError, Code.INSUFFICIENT_QUOTA, lambda exc: exc.message, False),
    (JobTimeoutError, Code.TIMEOUT, str, True),
    (GenerationError, Code.INVALID_REQUEST, str, False),
    (EngineDeadError, Code.ENGINE_ERROR, lambda exc: _ENGINE_DEAD_REASON, True),
    (PluginStageError, Code.PLUGIN_ERROR, str, True),
]


def _produced(exc: Exception) -> tuple[str, int, int] | None:
    """What a job that timed out or lost its engine generated first: kept and billed."""
    partial = getattr(exc, "partial", None)
    if partial is None:
        return None
    return printable(partial.text), partial.prompt_tokens, partial.completion_tokens


def _failure(exc: Exception) -> tuple[Code, str, bool] | None:
    """How ``exc`` ends the job (see FAILURES); None for one that is a bug (the job then fails
    as internal)."""
    for kind, code, reason, tokens_out in FAILURES:
        if isinstance(exc, kind):
            return code, reason(exc), tokens_out
    return None


# -- the engine's callbacks --------------------------------------------------------------------


class _Heartbeat:
    """Called by the engine once per decode step: now and then renews the job's concurrency
    lease and checks the job is still this attempt's; says whether to stop: someone asked to
    cancel the job, or the sweeper took this worker for dead and queued the job again."""

    def __init__(self, job: ChatJob) -> None:
        self.job = job
        self.job_id = str(job.id)
        self.every = settings.AUTOGLM_LEASE_TTL / 3
        self.next_renewal = time.monotonic() + self.every
        self.superseded = False

    def __call__(self) -> bool:
        from .runtime import cancels

        if time.monotonic() >= self.next_renewal:
            self.next_renewal = time.monotonic() + self.every
            # Off the engine thread: a Redis or database round trip must not stall the batch.
            threading.Thread(target=self._renew, daemon=True).start()
        return self.superseded or cancels().is_cancelled(self.job_id)

    def _renew(self) -> None:
        try:
            jobs.job_lease_renew(job=self.job)
            if not jobs.job_still_claimed(job=self.job):
                logger.warning(
                    "job claimed by another attempt; stopping", extra={"job_id": self.job_id}
                )
                self.superseded = True
        finally:
            connection.close()  # this thread's own connection
