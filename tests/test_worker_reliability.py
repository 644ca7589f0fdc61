"""Workers stop: SIGTERM lets jobs finish; a timed-out job keeps what it streamed (a killed
worker's jobs: tests/test_recovery.py)."""

import signal
import time

import pytest

from chat.models import ChatJob
from tenants.models import UsageRecord

from .conftest import WorkerProcess, wait_for_job

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]

ESSAY = "Write an essay about the sea."  # the demo model writes on for the whole max_tokens


def own_worker(celery_worker, settings, tmp_path, name: str, **env) -> WorkerProcess:
    """A worker on a queue of this test's own, so no other worker takes its jobs."""
    settings.AUTOGLM_QUEUE_PREFIX = f"{name}."
    worker_env = {**celery_worker.env, "AUTOGLM_QUEUE_PREFIX": f"{name}.", **env}
    return WorkerProcess(tmp_path / f"{name}-{time.monotonic_ns()}.log", worker_env).start()


def wait_until(predicate, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_it_finishes_running_jobs_on_sigterm(celery_worker, client_a, settings, tmp_path):
    worker = own_worker(celery_worker, settings, tmp_path, "sigterm")
    session = client_a.post("/api/v1/sessions", {}, format="json").json()
    job = client_a.post(
        f"/api/v1/sessions/{session['id']}/messages",
        {"content": ESSAY, "max_tokens": 300, "temperature": 0},
        format="json",
    ).json()
    try:
        wait_until(lambda: ChatJob.objects.get(pk=job["id"]).status == "running")
        worker.proc.send_signal(signal.SIGTERM)
        assert worker.proc.wait(60) == 0
    finally:
        worker.stop()
    row = ChatJob.objects.get(pk=job["id"])
    assert row.status == "succeeded" and row.completion_tokens == 300


def test_a_job_that_times_out_is_billed_for_what_it_streamed(
    celery_worker, client_a, settings, tmp_path
):
    """Issue 14, defect 10: a timeout failed the job with no token counts, unbilled."""
    worker = own_worker(celery_worker, settings, tmp_path, "timeout", AUTOGLM_JOB_TIMEOUT="1")
    try:
        session = client_a.post("/api/v1/sessions", {}, format="json").json()
        job = client_a.post(
            f"/api/v1/sessions/{session['id']}/messages",
            {"content": ESSAY, "max_tokens": 2000, "temperature": 0},
            format="json",
        ).json()
        done = wait_for_job(client_a, job["id"], timeout=60)
    finally:
        worker.stop()
    assert done["status"] == "failed" and done["error"]["code"] == "timeout", done
    row = ChatJob.objects.get(pk=job["id"])
    assert row.completion_tokens and row.completion_tokens > 0 and row.output
    usage = UsageRecord.objects.get(job_id=row.id)
    assert (usage.prompt_tokens, usage.completion_tokens) == (
        row.prompt_tokens,
        row.completion_tokens,
    )
