"""An answer's details: the worker stores when the first token came; the done event and the
chat page give each answer its model, tokens, time to first token and finish reason."""

import json
import time
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.test import Client

from autoglm_site.redisconn import redis_client
from chat import events, jobs, selectors
from chat.models import ChatJob, ChatSession
from tests.conftest import wait_for_job


def _run(job_id: str, *, text: str, finish_reason: str, completion: int, ttft_s: float):
    """End a job as a worker does, its first token ``ttft_s`` after its admission."""
    running = jobs.job_start(job_id=job_id, worker="test-worker")
    return jobs.job_finish(
        job=running,
        text=text,
        prompt_tokens=9,
        completion_tokens=completion,
        finish_reason=finish_reason,
        first_token_at=running.created_at + timedelta(seconds=ttft_s),
    )


def _last_event(job_id: str, kind: str, timeout: float = 10) -> dict:
    """The stream's newest event once it is of ``kind``. The worker publishes the done event
    after its transaction commits, so a poll can see the job succeeded a moment before it."""
    deadline = time.monotonic() + timeout
    while True:
        last = redis_client().xrevrange(events.stream_key(job_id), count=1)[0][1]
        if last["type"] == kind or time.monotonic() > deadline:
            return last
        time.sleep(0.05)


@pytest.fixture
def answered(client_a):
    """A session whose answer was cut by max_tokens, then continued once (and once more,
    a try that failed)."""
    session = client_a.post("/api/v1/sessions", {"title": "meta"}, format="json").json()
    job = client_a.post(
        f"/api/v1/sessions/{session['id']}/messages", {"content": "Hi"}, format="json"
    ).json()
    first = _run(job["id"], text="Hello", finish_reason="length", completion=4, ttft_s=0.25)
    url = f"/api/v1/sessions/{session['id']}/messages/{first.assistant_message_id}/continue"
    more = client_a.post(url, format="json").json()
    _run(more["id"], text=" there", finish_reason="stop", completion=3, ttft_s=2)
    failed = client_a.post(url, format="json").json()
    row = ChatJob.objects.get(pk=failed["id"])
    jobs.job_fail(job=row, reason="test", only_if_queued=True)
    return ChatSession.objects.get(pk=session["id"]), first.assistant_message_id


@pytest.mark.django_db
def test_it_sums_an_answer_over_the_jobs_that_wrote_it(answered):
    session, message_id = answered
    details = selectors.answer_details(tenant=session.tenant, session=session)
    assert details == {
        message_id: {
            "model": "autoglm-demo",
            "prompt_tokens": 9,
            "completion_tokens": 7,
            "ttft_ms": 250,  # what the user waited for the answer's first words
            "finish_reason": "stop",  # the last job's
        }
    }


@pytest.mark.django_db
def test_the_chat_page_gives_each_answer_its_details(answered, tenant_a):
    session, message_id = answered
    browser = Client()
    browser.force_login(User.objects.get(username="alice"))
    html = browser.get(f"/chat/{session.id}/").content.decode()
    article = html[html.index(f'data-message-id="{message_id}"') :].split(">", 1)[0]
    for attribute in (
        'data-model="autoglm-demo"',
        'data-prompt-tokens="9"',
        'data-completion-tokens="7"',
        'data-ttft-ms="250"',
        'data-finish-reason="stop"',
    ):
        assert attribute in article, article
    # The user's message has none.
    user = html[html.index('data-role="user"') :].split(">", 1)[0]
    assert "data-model" not in user


@pytest.mark.django_db
def test_the_done_event_tells_the_model_and_the_wait(client_a):
    session = client_a.post("/api/v1/sessions", {}, format="json").json()
    job = client_a.post(
        f"/api/v1/sessions/{session['id']}/messages", {"content": "Hi"}, format="json"
    ).json()
    finished = _run(job["id"], text="Hello", finish_reason="length", completion=4, ttft_s=0.5)
    kind, data = events.done_event(finished)
    assert kind == "done"
    assert data["model"] == "autoglm-demo" and data["ttft_ms"] == 500
    assert data["finish_reason"] == "length" and data["usage"]["completion_tokens"] == 4
    assert data["message_id"] == str(finished.assistant_message_id) and "continued" not in data


@pytest.mark.django_db(transaction=True)
def test_the_worker_stores_when_the_first_token_came(celery_worker, client_a):
    session = client_a.post("/api/v1/sessions", {"params": {"max_tokens": 6}}, format="json")
    url = f"/api/v1/sessions/{session.json()['id']}/messages"
    job = client_a.post(url, {"content": "Hello"}, format="json").json()
    assert wait_for_job(client_a, job["id"])["status"] == "succeeded"
    row = ChatJob.objects.get(pk=job["id"])
    assert row.first_token_at is not None
    assert row.started_at <= row.first_token_at <= row.finished_at
    assert row.ttft_ms == round((row.first_token_at - row.created_at).total_seconds() * 1000)
    # The final event the stream carried says it too.
    last = _last_event(job["id"], "done")
    done = json.loads(last["data"])
    assert last["type"] == "done" and done["model"] == "autoglm-demo"
    assert done["ttft_ms"] == row.ttft_ms and done["usage"]["prompt_tokens"] == row.prompt_tokens
