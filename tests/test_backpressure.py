"""Backpressure and deadlines (issue 15): a model no live worker serves answers 503
model_unavailable, a queue past its bound 503 server_overloaded, both with retry-after and
storing nothing; a non-stream completion waits at most AUTOGLM_REQUEST_TIMEOUT, then answers 504
and cancels its job. "autoglm-idle" has no real worker: its jobs stay in its queue."""

import asyncio
import time

import pytest
from django.test import AsyncClient

from autoglm_site.redisconn import broker_client
from chat.jobs import model_queue
from chat.models import ChatJob
from chat.worker_registry import worker_beat, worker_gone

from .test_metrics import parse, total

IDLE = "autoglm-idle"
BUSY_WORKER = "busy-worker"


@pytest.fixture
def idle_queue_empty():
    broker_client().delete(model_queue(IDLE))  # other tests' messages, of ended jobs
    yield
    broker_client().delete(model_queue(IDLE))


@pytest.fixture
def one_slot_worker(idle_queue_empty):
    """A worker entry for autoglm-idle that runs one job at a time (and takes none)."""
    worker_beat(worker=BUSY_WORKER, models=[IDLE], status={"capacity": 1}, ttl=600)
    yield
    worker_gone(worker=BUSY_WORKER)


def post_message(client, model: str = IDLE):
    session = client.post("/api/v1/sessions", {"model": model}, format="json").json()["id"]
    return client.post(f"/api/v1/sessions/{session}/messages", {"content": "hi"}, format="json")


def assert_retry_later(response, code: str) -> None:
    assert response.status_code == 503, response.content
    assert response.json()["error"]["code"] == code
    assert int(response["retry-after"]) >= 1


@pytest.mark.no_stand_in_worker
@pytest.mark.django_db
def test_a_model_without_a_live_worker_answers_503_and_stores_nothing(client_a, idle_queue_empty):
    scraped = parse(client_a.get("/metrics").content.decode())
    labels = {"code": "model_unavailable", "tenant": "tenant-a", "model": IDLE}
    refused_before = total(scraped, "autoglm_requests_rejected_total", **labels)
    response = client_a.post(
        "/v1/chat/completions",
        {"model": IDLE, "messages": [{"role": "user", "content": "hi"}]},
        format="json",
    )
    assert_retry_later(response, "model_unavailable")
    assert "no worker" in response.json()["error"]["message"].lower()
    assert_retry_later(post_message(client_a), "model_unavailable")
    assert not ChatJob.objects.exists()
    assert broker_client().llen(model_queue(IDLE)) == 0
    scraped = parse(client_a.get("/metrics").content.decode())
    assert total(scraped, "autoglm_requests_rejected_total", **labels) == refused_before + 2


@pytest.mark.no_stand_in_worker
@pytest.mark.django_db(transaction=True)  # a job's message is sent when its row commits
def test_a_queue_past_its_default_bound_answers_503_server_overloaded(
    client_a, one_slot_worker, settings
):
    # No bound set: four batches of the live workers' capacity (one slot here).
    settings.AUTOGLM_MAX_QUEUE_DEPTH = 0
    for _ in range(4):
        assert post_message(client_a).status_code == 202
    refused = post_message(client_a)
    assert_retry_later(refused, "server_overloaded")
    assert int(refused["retry-after"]) == 4  # four jobs ahead, one at a time
    assert ChatJob.objects.count() == 4


@pytest.mark.no_stand_in_worker
@pytest.mark.django_db(transaction=True)
def test_the_queue_bound_can_be_set(client_a, one_slot_worker, settings):
    settings.AUTOGLM_MAX_QUEUE_DEPTH = 2
    assert post_message(client_a).status_code == 202
    assert post_message(client_a).status_code == 202
    assert_retry_later(post_message(client_a), "server_overloaded")
    settings.AUTOGLM_MAX_QUEUE_DEPTH = 3
    assert post_message(client_a).status_code == 202


@pytest.mark.django_db(transaction=True)
def test_a_non_stream_completion_answers_504_after_the_request_timeout(
    tenant_a, key_a, settings, idle_queue_empty
):
    settings.AUTOGLM_REQUEST_TIMEOUT = 1
    body = {"model": IDLE, "messages": [{"role": "user", "content": "hi"}]}

    async def ask():
        return await AsyncClient().post(
            "/v1/chat/completions",
            body,
            content_type="application/json",
            headers={"Authorization": f"Bearer {key_a}"},
        )

    started = time.monotonic()
    response = asyncio.run(asyncio.wait_for(ask(), 20))
    assert time.monotonic() - started < 5
    assert response.status_code == 504, response.content
    assert response.json()["error"]["code"] == "timeout"
    job = ChatJob.objects.get(model=IDLE)
    assert job.status == ChatJob.Status.CANCELLED


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_time_queued_counts_toward_the_job_timeout(celery_worker, tenant_a, client_a, settings):
    """A job that waited in its queue longer than AUTOGLM_JOB_TIMEOUT (600 s for the test
    worker) times out when a worker claims it, instead of getting a fresh allowance."""
    from datetime import timedelta

    from django.db import transaction
    from django.utils import timezone

    from chat.services import completion_submit

    from .conftest import wait_for_job

    with transaction.atomic():  # the job's message goes out when this commits
        job, _ = completion_submit(
            tenant=tenant_a,
            api_key=None,
            model="autoglm-demo",
            messages=[{"role": "user", "content": "hi"}],
            params={"max_tokens": 4},
        )
        admitted = timezone.now() - timedelta(seconds=settings.AUTOGLM_JOB_TIMEOUT + 5)
        ChatJob.objects.filter(pk=job.pk).update(created_at=admitted, queued_at=admitted)
    done = wait_for_job(client_a, str(job.id), timeout=30)
    assert done["status"] == "failed", done
    assert done["error"]["code"] == "timeout", done
