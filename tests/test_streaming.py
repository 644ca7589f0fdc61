"""SSE on the running stack: tokens arrive while generating, resume without gaps, and
disconnecting or cancelling stops the worker with the partial answer kept."""

import asyncio
import contextlib
import json
import threading
import time
import uuid

import httpx
import pytest

from autoglm_site.redisconn import redis_client
from chat.events import stream_key
from chat.models import ChatJob

from .conftest import wait_for_job

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]

LONG = 1500  # far more tokens than a test waits for: the job is still generating meanwhile


def sse_events(response: httpx.Response):
    """Parse an SSE response into dicts of its fields, one per event."""
    event: dict = {}
    for line in response.iter_lines():
        if not line:
            if event:
                yield event
            event = {}
        elif not line.startswith(":"):
            field, _, value = line.partition(":")
            event[field] = value.removeprefix(" ")


@pytest.fixture
def http(live_server_url, key_a):
    with httpx.Client(
        base_url=live_server_url, headers={"Authorization": f"Bearer {key_a}"}, timeout=60
    ) as client:
        yield client


def start_job(http, max_tokens: int, content: str = "Write an essay about the sea.") -> dict:
    session = http.post("/api/v1/sessions", json={}).json()
    job = http.post(
        f"/api/v1/sessions/{session['id']}/messages",
        json={"content": content, "max_tokens": max_tokens, "temperature": 0},
    )
    assert job.status_code == 202
    return job.json()


def test_it_streams_chunks_while_the_job_runs(http):
    body = {
        "model": "autoglm-demo",
        "stream": True,
        "max_tokens": LONG,
        "temperature": 0,
        "messages": [{"role": "user", "content": "Write an essay about the sea."}],
    }
    with http.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-request-id"]
        contents = []
        for event in sse_events(response):
            chunk = json.loads(event["data"])
            if chunk["choices"][0]["delta"].get("content"):
                contents.append(chunk)
                if len(contents) == 3:
                    break
        job = ChatJob.objects.get(pk=contents[0]["id"].removeprefix("chatcmpl-"))
        # Three chunks in hand while the job is still generating: nothing waited for the end.
        assert job.status == "running"


def test_it_cancels_the_job_when_the_client_disconnects(http):
    body = {
        "model": "autoglm-demo",
        "stream": True,
        "max_tokens": LONG,
        "temperature": 0,
        "messages": [{"role": "user", "content": "Write an essay about the sea."}],
    }
    with http.stream("POST", "/v1/chat/completions", json=body) as response:
        for event in sse_events(response):
            chunk = json.loads(event["data"])
            if chunk["choices"][0]["delta"].get("content"):
                break
    job_id = chunk["id"].removeprefix("chatcmpl-")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        job = ChatJob.objects.get(pk=job_id)
        if job.is_finished:
            break
        time.sleep(0.05)
    assert job.status == "cancelled"
    assert 0 < job.completion_tokens < LONG
    assert job.output  # the partial answer is kept


def test_it_resumes_events_after_the_last_event_id(http):
    job = start_job(http, max_tokens=300)
    first: list[dict] = []
    with http.stream("GET", f"/api/v1/jobs/{job['id']}/events") as response:
        assert response.status_code == 200
        for event in sse_events(response):
            if event.get("event") == "token":
                first.append(event)
                if len(first) == 5:
                    break
    rest: list[dict] = []
    with http.stream(
        "GET", f"/api/v1/jobs/{job['id']}/events", headers={"Last-Event-ID": first[-1]["id"]}
    ) as response:
        for event in sse_events(response):
            if "event" in event:
                rest.append(event)
    assert rest[-1]["event"] == "done"
    tokens = first + [e for e in rest if e["event"] == "token"]
    ids = [tuple(map(int, e["id"].split("-"))) for e in tokens]
    assert ids == sorted(set(ids))  # no duplicate, in order
    text = "".join(json.loads(e["data"])["text"] for e in tokens)
    done = wait_for_job(http, job["id"])
    assert text == done["message"]["content"]  # and no gap
    assert json.loads(rest[-1]["data"])["usage"] == done["usage"]


def resume(http, job_id: str, after: str) -> list[dict] | None:
    """The events after ``after``, or None for a 204 (nothing more, ever). A stream that does
    not end within 5 s raises ReadTimeout (keep-alives come every 15 s)."""
    events = f"/api/v1/jobs/{job_id}/events"
    headers = {"Last-Event-ID": after}
    with http.stream("GET", events, headers=headers, timeout=5) as response:
        if response.status_code == 204:
            return None
        assert response.status_code == 200
        return [event for event in sse_events(response) if "event" in event]


def test_it_answers_204_to_a_stream_resumed_after_the_final_event(http):
    """An SSE client reconnects when a stream ends (EventSource does), with the final event's
    id. Nothing is left to send: a 204 (which tells EventSource to stop), not a stream left
    open on keep-alives."""
    job = start_job(http, max_tokens=4)
    wait_for_job(http, job["id"])
    everything = resume(http, job["id"], "0-0")
    assert everything[-1]["event"] == "done"
    assert resume(http, job["id"], everything[-1]["id"]) is None
    assert resume(http, job["id"], "18446744073709551615-0") is None  # past anything
    assert resume(http, job["id"], everything[-2]["id"]) == everything[-1:]


def test_it_replays_a_stream_from_the_database_at_once_and_resumes_it_without_repeats(http):
    """Once Redis no longer has the stream, a finished job is replayed from the database as
    events 0-1 (its text) and 0-2 (its end). The replay waited for the first keep-alive tick
    (15 s), and a resume after one of its events repeated both."""
    job = start_job(http, max_tokens=4)
    wait_for_job(http, job["id"])
    redis_client().delete(stream_key(job["id"]))
    replayed = resume(http, job["id"], "0-0")
    assert [event["id"] for event in replayed] == ["0-1", "0-2"]
    assert resume(http, job["id"], "0-1") == replayed[1:]
    assert resume(http, job["id"], "0-2") is None


def test_it_replays_everything_to_a_late_subscriber(http):
    job = start_job(http, max_tokens=20)
    done = wait_for_job(http, job["id"])
    with http.stream("GET", f"/api/v1/jobs/{job['id']}/events") as response:
        events = [e for e in sse_events(response) if "event" in e]
    text = "".join(json.loads(e["data"])["text"] for e in events if e["event"] == "token")
    assert text == done["message"]["content"]
    assert events[-1]["event"] == "done"


def test_it_cancels_a_running_job_and_keeps_the_partial_answer(http):
    job = start_job(http, max_tokens=LONG)
    with http.stream("GET", f"/api/v1/jobs/{job['id']}/events") as response:
        for event in sse_events(response):
            if event.get("event") == "token":
                cancel = http.post(f"/api/v1/jobs/{job['id']}/cancel")
                assert cancel.status_code == 200
            if event.get("event") == "done":
                final = json.loads(event["data"])
                break
    assert final["status"] == "cancelled" and final["finish_reason"] == "cancelled"
    done = wait_for_job(http, job["id"])
    assert done["status"] == "cancelled"
    assert 0 < done["usage"]["completion_tokens"] < LONG
    assert done["message"]["content"]  # partial answer kept in the history
    history = http.get(f"/api/v1/sessions/{done['session_id']}/messages").json()["data"]
    assert history[-1]["content"] == done["message"]["content"]


def test_it_rejects_a_malformed_last_event_id(http):
    job = start_job(http, max_tokens=2)
    response = http.get(f"/api/v1/jobs/{job['id']}/events", headers={"Last-Event-ID": "x"})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "Last-Event-ID"


@pytest.mark.parametrize(
    "event_id",
    ["18446744073709551616-0", "0-18446744073709551616", "\u0661-0", "1-0\n"],
    ids=["time past 2**64", "sequence past 2**64", "an Arabic-Indic digit", "a newline"],
)
def test_it_rejects_a_last_event_id_that_redis_would_refuse(http, event_id):
    """Each looked like an id to the check but Redis refuses it: the stream broke after its 200
    (XREAD's error mid-stream) instead of answering a 400."""
    job = start_job(http, max_tokens=2)
    events = f"/api/v1/jobs/{job['id']}/events"
    response = http.get(events, params={"last_event_id": event_id})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "Last-Event-ID"
    if event_id.isascii() and event_id.isprintable():
        response = http.get(events, headers={"Last-Event-ID": event_id})
        assert response.status_code == 400
    largest = "18446744073709551615-18446744073709551615"  # still an id Redis takes
    with http.stream("GET", events, headers={"Last-Event-ID": largest}) as response:
        # A stream while the job runs; once it has ended, nothing is after that id.
        assert response.status_code in (200, 204)


def test_it_hides_another_tenants_job_events(http, live_server_url, key_b):
    job = start_job(http, max_tokens=2)
    response = httpx.get(
        f"{live_server_url}/api/v1/jobs/{job['id']}/events",
        headers={"Authorization": f"Bearer {key_b}"},
    )
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    response = httpx.get(f"{live_server_url}/api/v1/jobs/{job['id']}/events")
    assert response.status_code == 401


def test_it_trims_the_oldest_turns_to_fit_the_context_window(http):
    session = http.post("/api/v1/sessions", json={"system_prompt": "Be brief."}).json()
    paragraph = " ".join(f"sentence number {i} about the history of computing." for i in range(60))
    for turn in range(6):
        job = http.post(
            f"/api/v1/sessions/{session['id']}/messages",
            json={"content": f"{turn}: {paragraph}", "max_tokens": 4},
        ).json()
        wait_for_job(http, job["id"])
    job = http.post(
        f"/api/v1/sessions/{session['id']}/messages", json={"content": "And now?", "max_tokens": 16}
    ).json()
    done = wait_for_job(http, job["id"])
    assert done["status"] == "succeeded", done
    assert done["dropped_messages"] > 0
    assert done["usage"]["prompt_tokens"] + 16 <= 2048


def test_it_keeps_a_queued_jobs_stream_open_while_it_waits(http):
    # "autoglm-idle" is served by no worker: the job stays queued and its stream gets no event
    # for longer than a Redis client's default socket timeout (5 s), yet must stay open.
    body = {
        "model": "autoglm-idle",
        "stream": True,
        "max_tokens": 8,
        "messages": [{"role": "user", "content": "Hello?"}],
    }
    with http.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        events = sse_events(response)
        first = json.loads(next(events)["data"])  # the role chunk goes out at once
        job_id = first["id"].removeprefix("chatcmpl-")
        time.sleep(6.5)
        http.post(f"/api/v1/jobs/{job_id}/cancel").raise_for_status()
        rest = [event["data"] for event in events]
    assert rest[-1] == "[DONE]"
    assert json.loads(rest[-2])["choices"][0]["finish_reason"] == "stop"
    assert ChatJob.objects.get(pk=job_id).status == "cancelled"


def _database_connections() -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return cursor.fetchone()[0]


def test_it_holds_no_database_connection_while_jobs_stream(http):
    # Open streams last minutes: if each held a database connection (its web request's, and its
    # worker thread's while generating), a few hundred users would exhaust PostgreSQL's limit.
    before = _database_connections()

    def body(model: str) -> dict:
        return {
            "model": model,
            "stream": True,
            "max_tokens": LONG,
            "temperature": 0,
            "messages": [{"role": "user", "content": "Write an essay about the sea."}],
        }

    readers = []  # a reader that is let go closes its connection, which cancels its job
    with contextlib.ExitStack() as stack:
        for model in ["autoglm-demo"] * 3 + ["autoglm-idle"] * 3:
            response = stack.enter_context(
                http.stream("POST", "/v1/chat/completions", json=body(model))
            )
            events = sse_events(response)
            readers.append(events)
            chunk = json.loads(next(events)["data"])  # the role chunk
            if model == "autoglm-demo":
                while not chunk["choices"][0]["delta"].get("content"):
                    chunk = json.loads(next(events)["data"])  # generating now
        time.sleep(0.5)
        held = _database_connections() - before
        generating = ChatJob.objects.filter(status="running").count()
    assert generating == 3
    assert held <= 1


@pytest.mark.django_db(transaction=True)
def test_a_completion_that_no_worker_takes_answers_503_instead_of_waiting_forever(
    tenant_a, key_a, settings
):
    """Issue 14, defect 12: autoglm-idle has no worker; the wait is bounded by the queued
    lease (after it the job holds no slot anyway) and the job fails, so a late worker skips it."""
    from django.test import AsyncClient

    settings.AUTOGLM_QUEUED_LEASE_TTL = 1
    settings.AUTOGLM_SSE_KEEPALIVE_MS = 200
    client = AsyncClient()
    body = {"model": "autoglm-idle", "messages": [{"role": "user", "content": "hi"}]}

    async def ask():
        return await asyncio.wait_for(
            client.post(
                "/v1/chat/completions",
                body,
                content_type="application/json",
                headers={"Authorization": f"Bearer {key_a}"},
            ),
            20,
        )

    response = asyncio.run(ask())
    assert response.status_code == 503, response.content
    error = response.json()["error"]
    assert error["code"] == "model_unavailable" and "no worker" in error["message"].lower()
    job = ChatJob.objects.get(model="autoglm-idle")
    assert job.status == "failed" and job.finished_at is not None


def test_a_stream_whose_job_restarts_after_text_was_sent_cancels_the_job(http):
    """Issue 14, defect 14: after a ``reset`` (a redelivered job starting over) the relay told the
    client to retry but left the job running: it ran on unseen and was billed, besides the retry.

    The job is for "autoglm-idle", which no worker serves: its events are published here."""
    from chat import events

    body = {
        "model": "autoglm-idle",
        "stream": True,
        "max_tokens": 8,
        "messages": [{"role": "user", "content": "Hello?"}],
    }
    with http.stream("POST", "/v1/chat/completions", json=body) as response:
        frames = (event["data"] for event in sse_events(response))
        job_id = str(uuid.UUID(json.loads(next(frames))["id"].removeprefix("chatcmpl-")))
        # One token at a time until the relay sends one (it holds the latest back); if it never
        # does within 100 tokens, the stream is closed and the test fails instead of hanging.
        stop = threading.Event()

        def publish_tokens():
            for _ in range(100):
                if stop.wait(0.1):
                    return
                events.publish(job_id, *events.token_event("word "))
            response.close()

        publisher = threading.Thread(target=publish_tokens, daemon=True)
        publisher.start()
        try:
            while not json.loads(next(frames))["choices"][0]["delta"].get("content"):
                pass
        finally:
            stop.set()
            publisher.join()
        events.publish(job_id, *events.reset_event(2))
        rest = list(frames)
    error = json.loads(rest[-2])["error"]
    assert error["code"] == "generation_restarted" and rest[-1] == "[DONE]"
    # Told to retry, the client will: the restarted attempt must not run on and be billed.
    deadline = time.monotonic() + 10
    while not (job := ChatJob.objects.get(pk=job_id)).is_finished:
        assert time.monotonic() < deadline, job.status
        time.sleep(0.05)
    assert job.status == "cancelled"
