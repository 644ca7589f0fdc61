"""Celery tasks: thin interfaces that take ids and call the job runner.

The web side enqueues by task name (``chat.jobs.job_enqueue``) and never imports this module;
it must stay light all the same (Celery's autodiscovery may import it anywhere), so torch comes
in only inside the job runner's functions.
"""

from celery import shared_task

from .job_runner import job_run


@shared_task(name="workers.chat_job_run", acks_late=True, reject_on_worker_lost=True)
def chat_job_run(job_id: str) -> None:
    """Generate the answer of one chat job, streaming it as job events, and store it."""
    job_run(job_id=job_id)
