"""Celery tasks: thin interfaces that take ids and call services.

This module is imported by web processes (to enqueue), so torch is imported only inside the
task body, which runs in workers alone.
"""

import logging

from celery import shared_task

from autoglm_site.tracing import trace_id_var
from chat.services import job_fail, job_prompt_messages, job_start, job_succeed

logger = logging.getLogger(__name__)


@shared_task(name="workers.chat_job_run", acks_late=True, reject_on_worker_lost=True)
def chat_job_run(job_id: str) -> None:
    """Generate the answer of one chat job and store it."""
    job = job_start(job_id=job_id)
    if job is None:
        logger.info("job already finished, skipping", extra={"job_id": job_id})
        return
    token = trace_id_var.set(job.trace_id)
    try:
        _run(job)
    finally:
        trace_id_var.reset(token)


def _run(job) -> None:
    from .generation import GenerationError, generate
    from .registry import UnknownModelError
    from .runtime import get_registry

    params = job.params
    logger.info(
        "job running", extra={"job_id": str(job.id), "model": job.model, "attempt": job.attempts}
    )
    try:
        loaded = get_registry().get(job.model)
    except (UnknownModelError, OSError):
        logger.exception("model unavailable", extra={"job_id": str(job.id), "model": job.model})
        job_fail(job=job, reason=f"The model '{job.model}' could not be loaded on the worker.")
        return
    try:
        result = generate(
            loaded,
            job_prompt_messages(job=job),
            max_tokens=params["max_tokens"],
            temperature=params.get("temperature", 1.0),
            top_p=params.get("top_p", 1.0),
            seed=params.get("seed"),
        )
    except GenerationError as exc:
        job_fail(job=job, reason=str(exc))
        return
    except Exception:
        # The job must end either way; the traceback goes to the worker log, not the client.
        logger.exception("job crashed", extra={"job_id": str(job.id)})
        job_fail(job=job, reason="The worker hit an internal error while generating.")
        return
    job_succeed(
        job=job,
        text=result.text,
        prompt_tokens=result.prompt_tokens,
        completion_tokens=result.completion_tokens,
        finish_reason=result.finish_reason,
    )
