"""Celery tasks: thin interfaces that take ids and call the job runner.

The web side enqueues by task name (``chat.jobs.job_enqueue``) and never imports this module;
it must stay light all the same (Celery's autodiscovery may import it anywhere), so torch comes
in only inside the job runner's functions.
"""

from celery import shared_task

from tenants.webhook_delivery import delivery_try

from .job_runner import job_run


@shared_task(name="workers.chat_job_run", acks_late=True, reject_on_worker_lost=True)
def chat_job_run(job_id: str) -> None:
    """Generate the answer of one chat job, streaming it as job events, and store it."""
    job_run(job_id=job_id)


@shared_task(name="workers.deliver_webhook", ignore_result=True)
def deliver_webhook(delivery_id: str, attempt: int) -> None:
    """One try of a webhook delivery (tenants.webhook_delivery); a failed one is tried again
    when the sweeper finds it due."""
    delivery_try(delivery_id, attempt)
