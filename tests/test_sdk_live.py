"""The Python SDK (`sdk/python`, package `autoglm`) against the live stack: uvicorn, PostgreSQL,
Redis and a real Celery worker with the demo model. Its retries are tested on a fault-injecting
server in sdk/python/tests; here every answer and every error comes from the real server."""

import asyncio
import socket
import threading
import time
import uuid

import autoglm
import pytest

from chat import events as job_events
from chat.jobs import job_fail
from chat.models import ChatJob, ChatSession, Message
from tests.dropproxy import DroppingProxy

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]

MODEL = "autoglm-demo"
HELLO = [{"role": "user", "content": "Say something about Python."}]
LONG = 1500  # more tokens than a test waits for: the job is still generating meanwhile
# At temperature 0 the demo model writes all LONG tokens for this prompt (about 2 s on a CPU).
ESSAY = [{"role": "user", "content": "Write an essay about the sea."}]
WRONG_KEY = "sk-AAAAAAAA." + "B1c2D3e4" * 4


@pytest.fixture
def client(live_server_url, key_a):
    with autoglm.AutoGLMClient(api_key=key_a, base_url=live_server_url) as client:
        yield client


def fail_job(job: ChatJob) -> None:
    """Fail a running job as a worker would on a crash, and stop its generation."""
    job_fail(job=job, reason="Injected.")
    job_events.cancel_request(job.id)


def wait_until(predicate, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise TimeoutError("condition not met")


def test_it_runs_the_developer_guide_example(live_server_url, key_a, capsys):
    import autoglm

    print(autoglm.__version__)
    client = autoglm.AutoGLMClient(api_key=key_a, base_url=live_server_url)
    response = client.chat(
        messages=[{"role": "user", "content": "Hello! Who are you?"}],
        model=MODEL,
        temperature=0.7,
        max_tokens=256,
        top_p=0.9,
    )
    print(response["content"])

    printed = capsys.readouterr().out
    assert printed.startswith(autoglm.__version__ + "\n")
    assert response["content"] and response["content"] in printed
    assert response["finish_reason"] in ("stop", "length")
    assert response["id"].startswith("chatcmpl-") and response["model"] == MODEL
    usage = response["usage"]
    assert usage["prompt_tokens"] > 0 and 0 < usage["completion_tokens"] <= 256
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert response["raw"]["choices"][0]["message"]["content"] == response["content"]
    job = ChatJob.objects.get(pk=response["id"].removeprefix("chatcmpl-"))
    assert job.output == response["content"]
    assert job.params["temperature"] == 0.7 and job.params["top_p"] == 0.9
    client.close()


def test_it_takes_base_url_and_api_key_from_the_environment(live_server_url, key_a, monkeypatch):
    monkeypatch.setenv("AUTOGLM_BASE_URL", live_server_url)
    monkeypatch.setenv("AUTOGLM_API_KEY", key_a)
    with autoglm.AutoGLMClient() as client:
        assert MODEL in [m["id"] for m in client.models.list()]
        assert client.models.get(MODEL)["id"] == MODEL


def test_it_streams_the_same_text_and_ends_with_the_usage(client):
    whole = client.chat(messages=HELLO, model=MODEL, max_tokens=24, temperature=0)

    def relay(stream):
        usage = yield from stream  # the iteration ends with the usage
        yield usage

    with client.chat(
        messages=HELLO, model=MODEL, max_tokens=24, temperature=0, stream=True
    ) as stream:
        items = list(relay(stream))
    deltas, usage = items[:-1], items[-1]
    assert len(deltas) > 1 and all(isinstance(d, str) and d for d in deltas)
    assert "".join(deltas) == whole["content"] == stream.content
    assert usage == stream.usage == whole["usage"]
    assert stream.finish_reason == whole["finish_reason"]
    assert stream.id.startswith("chatcmpl-") and stream.id != whole["id"]
    assert stream.model == MODEL and stream.request_id


def test_it_cancels_the_job_when_a_stream_is_closed_early(client):
    stream = client.chat(messages=ESSAY, model=MODEL, max_tokens=LONG, temperature=0, stream=True)
    first = next(stream)
    assert first
    job_id = stream.id.removeprefix("chatcmpl-")
    stream.close()
    job = wait_until(lambda: ChatJob.objects.filter(pk=job_id, status__in=ChatJob.FINISHED).first())
    assert job.status == "cancelled", (job.status, job.completion_tokens, job.error)
    assert 0 < job.completion_tokens < LONG


def test_it_works_with_the_async_client(live_server_url, key_a):
    async def run():
        async with autoglm.AsyncAutoGLMClient(api_key=key_a, base_url=live_server_url) as client:
            whole = await client.chat(messages=HELLO, model=MODEL, max_tokens=12, temperature=0)
            stream = await client.chat(
                messages=HELLO, model=MODEL, max_tokens=12, temperature=0, stream=True
            )
            deltas = [delta async for delta in stream]
            session = await client.sessions.create(title="async", params={"max_tokens": 6})
            job = await client.sessions.send(session["id"], "Hi there", temperature=0)
            events = [e async for e in client.jobs.events(job["id"])]
            return whole, deltas, stream.usage, job, events

    whole, deltas, usage, job, events = asyncio.run(run())
    assert "".join(deltas) == whole["content"] and usage == whole["usage"]
    assert job["status"] == "succeeded" and job["usage"]["completion_tokens"] <= 6
    tokens = "".join(e["data"]["text"] for e in events if e["event"] == "token")
    assert tokens == job["message"]["content"] and events[-1]["event"] == "done"


def test_it_creates_lists_and_talks_in_sessions(client):
    first = client.sessions.create(title="first")
    session = client.sessions.create(
        title="SDK", system_prompt="Be brief.", params={"max_tokens": 8, "temperature": 0}
    )
    assert session["object"] == "chat.session" and session["model"] == MODEL
    assert session["params"] == {"max_tokens": 8, "temperature": 0}

    page = client.sessions.list(limit=1)
    assert page["object"] == "list" and page["has_more"] is True
    assert [s["id"] for s in page["data"]] == [session["id"]]  # newest first
    rest = client.sessions.list(limit=1, after=page["last_id"])
    assert [s["id"] for s in rest["data"]] == [first["id"]] and rest["has_more"] is False
    assert [s["id"] for s in client.sessions.iterate(page_size=1)] == [session["id"], first["id"]]

    job = client.sessions.send(session["id"], "Hello, who are you?")
    assert job["status"] == "succeeded" and job["session_id"] == session["id"]
    answer = job["message"]["content"]
    assert answer and 0 < job["usage"]["completion_tokens"] <= 8
    again = client.sessions.send(session["id"], "And then?", max_tokens=4, seed=7)
    assert again["usage"]["prompt_tokens"] > job["usage"]["prompt_tokens"]  # history included
    history = client.sessions.messages(session["id"])["data"]
    assert [m["role"] for m in history] == ["user", "assistant", "user", "assistant"]
    assert history[1]["content"] == answer

    assert client.sessions.update(session["id"], title="renamed")["title"] == "renamed"
    client.sessions.delete(session["id"])
    with pytest.raises(autoglm.NotFoundError):
        client.sessions.get(session["id"])


def test_it_follows_a_job_s_events_and_resumes_after_an_event_id(client):
    session = client.sessions.create()
    # Long enough for many events (the worker may merge pieces that waited together into one).
    queued = client.sessions.send(
        session["id"], ESSAY[0]["content"], max_tokens=300, temperature=0, wait=False
    )
    assert queued["status"] in ("queued", "running")

    events = list(client.jobs.events(queued["id"]))
    assert events[-1]["event"] == "done" and events[-1]["data"]["status"] == "succeeded"
    tokens = [e for e in events if e["event"] == "token"]
    assert len(tokens) > 3
    job = client.jobs.get(queued["id"])
    assert "".join(e["data"]["text"] for e in tokens) == job["message"]["content"]
    assert events[-1]["data"]["usage"] == job["usage"]

    # Starting after the third token gives exactly what followed it (tokens that are already
    # there when read come merged into fewer events: the same text, no gap, no repeat).
    rest = list(client.jobs.events(queued["id"], last_event_id=tokens[2]["id"]))
    followed = events[events.index(tokens[2]) + 1 :]
    assert "".join(e["data"]["text"] for e in rest if e["event"] == "token") == "".join(
        e["data"]["text"] for e in followed if e["event"] == "token"
    )
    assert rest[-1] == followed[-1]


def test_it_cancels_a_running_job(client):
    session = client.sessions.create()
    queued = client.sessions.send(
        session["id"], ESSAY[0]["content"], max_tokens=LONG, temperature=0, wait=False
    )
    for event in client.jobs.events(queued["id"]):
        if event["event"] == "token":
            assert client.jobs.cancel(queued["id"])["id"] == queued["id"]
            break
    job = client.jobs.wait(queued["id"], timeout=30)
    assert job["status"] == "cancelled" and job["finish_reason"] == "cancelled"
    assert 0 < job["usage"]["completion_tokens"] < LONG


# Each error type, from a real server response.


def test_it_raises_authentication_error_for_a_wrong_key(live_server_url):
    with autoglm.AutoGLMClient(api_key=WRONG_KEY, base_url=live_server_url) as client:
        with pytest.raises(autoglm.AuthenticationError) as caught:
            client.chat(messages=HELLO, model=MODEL)
        with pytest.raises(autoglm.AuthenticationError):
            client.sessions.list()
    error = caught.value
    assert error.status_code == 401 and error.code == "invalid_api_key"
    assert error.request_id and error.request_id.startswith("req_") and error.message


def test_it_raises_permission_denied_for_a_suspended_tenant(client, tenant_a):
    tenant_a.is_active = False
    tenant_a.save()
    with pytest.raises(autoglm.PermissionDeniedError) as caught:
        client.chat(messages=HELLO, model=MODEL)
    assert caught.value.status_code == 403 and caught.value.code == "tenant_suspended"
    assert caught.value.request_id
    with pytest.raises(autoglm.PermissionDeniedError):
        client.sessions.create()


def test_it_raises_not_found_for_an_unknown_model_or_id(client, key_b, live_server_url):
    with pytest.raises(autoglm.NotFoundError) as caught:
        client.chat(messages=HELLO, model="gpt-9")
    assert caught.value.status_code == 404 and caught.value.code == "model_not_found"
    with pytest.raises(autoglm.NotFoundError) as caught:
        client.jobs.get(str(uuid.uuid4()))
    assert caught.value.code == "not_found" and caught.value.request_id
    # Another tenant's session answers exactly like a missing one.
    session = client.sessions.create()
    with autoglm.AutoGLMClient(api_key=key_b, base_url=live_server_url) as other:
        with pytest.raises(autoglm.NotFoundError):
            other.sessions.send(session["id"], "Hi")


def test_it_raises_bad_request_with_the_param(client):
    with pytest.raises(autoglm.BadRequestError) as caught:  # past the SDK's own check
        client.chat(messages=HELLO, model=MODEL, extra_body={"temperature": 5})
    error = caught.value
    assert type(error) is autoglm.BadRequestError
    assert error.status_code == 400 and error.param == "temperature" and error.request_id
    body = {"model": MODEL, "messages": HELLO, "stop": ["a", "b", "c", "d", "e"]}
    with pytest.raises(autoglm.BadRequestError) as caught:
        client.request("POST", "/v1/chat/completions", json=body)
    assert caught.value.param == "stop" and caught.value.code == "invalid_request_error"
    with pytest.raises(autoglm.BadRequestError) as caught:  # a stream fails before it starts
        client.chat(messages=HELLO, model=MODEL, stream=True, extra_body={"top_p": 0})
    assert caught.value.param == "top_p"
    assert ChatJob.objects.count() == 0
    # The SDK's own check refuses the same values without a request.
    with pytest.raises(autoglm.ValidationError) as caught:
        client.chat(messages=HELLO, model=MODEL, temperature=5)
    assert caught.value.param == "temperature" and caught.value.status_code is None


def test_it_raises_bad_request_for_a_prompt_that_does_not_fit(client):
    too_long = [{"role": "user", "content": "word " * 3000}]
    with pytest.raises(autoglm.BadRequestError) as caught:
        client.chat(messages=too_long, model=MODEL, max_tokens=8)
    assert caught.value.status_code == 400 and caught.value.code == "context_length_exceeded"
    session = client.sessions.create()
    with pytest.raises(autoglm.BadRequestError) as caught:
        client.sessions.send(session["id"], "word " * 3000, max_tokens=8)
    assert caught.value.code == "context_length_exceeded"
    assert caught.value.job["status"] == "failed"  # the failed job rides on the error


def test_it_raises_server_error_when_a_job_fails_mid_stream(client):
    stream = client.chat(messages=ESSAY, model=MODEL, max_tokens=LONG, temperature=0, stream=True)
    assert next(stream)
    fail_job(ChatJob.objects.get(pk=stream.id.removeprefix("chatcmpl-")))
    with pytest.raises(autoglm.ServerError) as caught:
        list(stream)
    error = caught.value
    assert error.code == "internal_error" and error.message == "Injected."
    assert error.status_code is None and error.request_id == stream.request_id


def test_it_raises_server_error_with_a_500_when_a_job_fails(client):
    result: dict = {}

    def call():
        try:
            client.chat(messages=ESSAY, model=MODEL, max_tokens=LONG, temperature=0)
        except autoglm.AutoGLMError as exc:
            result["error"] = exc

    thread = threading.Thread(target=call)
    thread.start()
    job = wait_until(lambda: ChatJob.objects.filter(status="running").first())
    fail_job(job)
    thread.join(30)
    error = result["error"]
    assert type(error) is autoglm.ServerError
    assert error.status_code == 500 and error.code == "internal_error" and error.request_id
    assert ChatJob.objects.count() == 1  # a 500 is not retried


def test_it_raises_rate_limit_error_with_retry_after(live_server_url, key_a, tenant_a):
    tenant_a.requests_per_minute = 1
    tenant_a.save()
    with autoglm.AutoGLMClient(api_key=key_a, base_url=live_server_url, max_retries=0) as client:
        client.chat(messages=HELLO, model=MODEL, max_tokens=2)
        with pytest.raises(autoglm.RateLimitError) as caught:
            client.chat(messages=HELLO, model=MODEL, max_tokens=2)
    error = caught.value
    assert type(error) is autoglm.RateLimitError
    assert error.status_code == 429 and error.code == "rate_limit_exceeded"
    assert 0 < error.retry_after <= 60 and error.request_id


def test_it_raises_quota_exceeded_at_once(client, tenant_a):
    tenant_a.tokens_per_month = 1
    tenant_a.save()
    started = time.monotonic()
    with pytest.raises(autoglm.QuotaExceededError) as caught:
        client.chat(messages=HELLO, model=MODEL, max_tokens=2)
    assert time.monotonic() - started < 1  # not retried, although it says retry-after
    error = caught.value
    assert error.status_code == 429 and error.code == "insufficient_quota"
    assert error.retry_after and error.retry_after > 0 and error.request_id


def test_it_retries_a_slow_answer_under_its_key_and_makes_one_job(live_server_url, key_a):
    with autoglm.AutoGLMClient(
        api_key=key_a, base_url=live_server_url, read_timeout=0.3, backoff_base=0.01
    ) as client:
        with pytest.raises(autoglm.APITimeoutError) as caught:
            client.chat(messages=ESSAY, model=MODEL, max_tokens=LONG, temperature=0)
    # Each try carried the call's Idempotency-Key: the retries waited for the first try's job,
    # and none made another. A keyed job outlives its client's hang-up (a retry may come back
    # for it), so it runs to its end.
    assert caught.value.request_sent and caught.value.retryable
    wait_until(
        lambda: (
            ChatJob.objects.exists()
            and not ChatJob.objects.exclude(status__in=ChatJob.FINISHED).exists()
        ),
        timeout=120,
    )
    jobs = list(ChatJob.objects.all())
    assert len(jobs) == 1 and jobs[0].status == "succeeded"


@pytest.fixture
def lossy_client(live_server_url, key_a):
    """A client behind a proxy that loses the first answer after the server acted on it."""
    proxy = DroppingProxy(int(live_server_url.rsplit(":", 1)[1])).start()
    with autoglm.AutoGLMClient(api_key=key_a, base_url=proxy.url, backoff_base=0.01) as client:
        client.proxy = proxy
        yield client
    proxy.stop()


def test_a_chat_whose_answer_was_lost_is_retried_into_its_one_job(lossy_client):
    response = lossy_client.chat(messages=HELLO, model=MODEL, max_tokens=8, temperature=0)
    assert lossy_client.proxy.dropped == 1 and lossy_client.proxy.connections == 2
    job = ChatJob.objects.get()  # the retry created none
    assert response["id"] == f"chatcmpl-{job.id.hex}" and response["content"] == job.output


def test_a_message_whose_answer_was_lost_is_retried_into_its_one_job(lossy_client):
    session = lossy_client.sessions.create(title="lossy")  # its answer is the one lost
    job = lossy_client.sessions.send(session["id"], "Hello", max_tokens=8, wait=False)
    assert lossy_client.proxy.dropped == 1
    assert ChatSession.objects.count() == 1
    assert [j.id for j in ChatJob.objects.all()] == [uuid.UUID(job["id"])]
    assert Message.objects.filter(role="user").count() == 1
    lossy_client.jobs.wait(job["id"], timeout=60)


def test_a_stream_whose_answer_was_lost_reattaches_to_its_job(lossy_client):
    stream = lossy_client.chat(messages=HELLO, model=MODEL, max_tokens=16, stream=True)
    text = "".join(stream)
    assert lossy_client.proxy.dropped == 1
    job = ChatJob.objects.get()
    assert job.status == "succeeded" and text == job.output  # from its start, each token once


def test_it_raises_connection_error_when_nothing_listens():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound but not listening: connections are refused
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        with autoglm.AutoGLMClient(api_key=WRONG_KEY, base_url=url, backoff_base=0.01) as client:
            with pytest.raises(autoglm.APIConnectionError) as caught:
                client.chat(messages=HELLO, model=MODEL)
    assert not isinstance(caught.value, autoglm.APITimeoutError)
    assert caught.value.status_code is None
