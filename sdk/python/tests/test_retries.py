"""Retries, against a fault-injecting HTTP server on a real 127.0.0.1 socket."""

from __future__ import annotations

import asyncio
import socket
import time

import autoglm
import pytest
from faultserver import (
    chat_stream,
    chunk,
    completion,
    drop,
    error_body,
    fail,
    make_async_client,
    respond,
    slow,
    sse,
)

HELLO = [{"role": "user", "content": "Hello"}]


def chat(client: autoglm.AutoGLMClient) -> autoglm.ChatResponse:
    return client.chat(messages=HELLO, model="test-model", max_tokens=8)


def test_it_succeeds_on_the_second_try_after_a_503(server, client):
    server.then(fail(503, "overloaded"), respond(200, completion("second time lucky")))
    response = chat(client)
    assert response["content"] == "second time lucky"
    assert len(server.attempts) == 2
    assert all(a.path == "/v1/chat/completions" for a in server.attempts)
    # One logical call, one request id, the same body each time.
    assert len({a.headers["x-request-id"] for a in server.attempts}) == 1
    assert server.attempts[0].body == server.attempts[1].body


def test_it_waits_about_a_second_when_a_429_says_retry_after_1(server, client):
    server.then(
        fail(429, "rate_limit_exceeded", "requests", retry_after="1"),
        respond(200, completion()),
    )
    started = time.monotonic()
    assert chat(client)["content"] == "Hello there"
    first, second = server.attempts
    waited = second.at - first.at
    assert 0.95 <= waited < 1.6, waited  # backoff in this client is 10 ms: the header ruled
    assert time.monotonic() - started < 2.5


def test_it_never_retries_insufficient_quota(server, client):
    server.then(
        fail(429, "insufficient_quota", "insufficient_quota", retry_after="1"),
        respond(200, completion()),
    )
    with pytest.raises(autoglm.QuotaExceededError) as caught:
        chat(client)
    assert len(server.attempts) == 1
    error = caught.value
    assert isinstance(error, autoglm.RateLimitError)
    assert error.status_code == 429 and error.code == "insufficient_quota"
    assert error.retry_after == 1.0
    assert error.request_id == "req_test_1"


def test_it_raises_server_error_after_exactly_three_502s(server, client):
    server.then(fail(502, "bad_gateway"), fail(502, "bad_gateway"), fail(502, "bad_gateway"))
    server.then(respond(200, {"id": "job-1"}))  # a fourth attempt would succeed: there is none
    with pytest.raises(autoglm.ServerError) as caught:
        client.jobs.get("job-1")
    assert len(server.attempts) == 3
    assert caught.value.status_code == 502 and caught.value.code == "bad_gateway"
    assert caught.value.request_id == "req_test_3"


# A POST that reached the server may have created a job: it is sent again after a dropped
# connection, a read timeout or a 502/504 only because it carries an Idempotency-Key, the same
# on each try, with which the server answers the retry with the first job. Without one it is not
# (it would answer twice and bill twice).


def test_it_resends_a_post_whose_connection_dropped_with_the_same_key(server, client):
    server.then(drop(), respond(200, completion("the first job, replayed")))
    assert chat(client)["content"] == "the first job, replayed"
    first, second = server.attempts
    assert first.headers["idempotency-key"] == second.headers["idempotency-key"]
    assert first.headers["idempotency-key"].startswith("idem_")
    assert first.body == second.body


def test_it_gives_each_call_its_own_key(server, client):
    server.then(respond(200, completion()), respond(200, completion()))
    chat(client)
    chat(client)
    first, second = server.attempts
    assert first.headers["idempotency-key"] != second.headers["idempotency-key"]


def test_it_sends_the_callers_own_key(server, client):
    server.then(drop(), respond(200, completion()), respond(201, {"id": "s-1"}))
    client.chat(messages=HELLO, model="test-model", idempotency_key="order-42")
    client.sessions.create(title="t", idempotency_key="session-7")
    assert [a.headers["idempotency-key"] for a in server.attempts] == [
        "order-42",
        "order-42",
        "session-7",
    ]


def test_it_retries_a_post_while_its_first_try_is_in_flight(server, client):
    server.then(
        fail(409, "idempotency_key_in_flight", "invalid_request_error", retry_after="0"),
        respond(200, completion("answered")),
    )
    assert chat(client)["content"] == "answered"
    assert len(server.attempts) == 2


def test_it_does_not_retry_a_plain_conflict(server, client):
    server.then(fail(409, "conflict", "invalid_request_error"), respond(202, {"id": "job-1"}))
    with pytest.raises(autoglm.ConflictError):
        client.sessions.send("s-1", "hi", wait=False)
    assert len(server.attempts) == 1


def test_it_does_not_resend_a_post_without_a_key_whose_connection_dropped(server, client):
    server.then(drop(), respond(200, completion("a second job")))
    with pytest.raises(autoglm.APIConnectionError, match="may have been processed") as caught:
        client.request("PATCH", "/api/v1/sessions/s-1", json={"title": "x"})
    assert not caught.value.retryable
    assert len(server.attempts) == 1


def test_it_retries_a_get_whose_connection_dropped(server, client):
    server.then(drop(), respond(200, {"id": "job-1", "object": "job", "status": "queued"}))
    assert client.jobs.get("job-1")["status"] == "queued"
    assert len(server.attempts) == 2


def test_it_raises_a_connection_error_after_three_dropped_connections(server, client):
    server.then(drop(), drop(), drop(), respond(200, {"id": "job-1", "status": "queued"}))
    with pytest.raises(autoglm.APIConnectionError) as caught:
        client.jobs.get("job-1")
    assert not isinstance(caught.value, autoglm.APITimeoutError)
    assert len(server.attempts) == 3


def test_it_resends_a_post_that_timed_out_waiting_with_the_same_key(server, make_client):
    client = make_client(read_timeout=0.3)
    server.then(slow(1.0, respond(200, completion("too late"))), respond(200, completion("fast")))
    assert chat(client)["content"] == "fast"
    first, second = server.attempts
    assert first.headers["idempotency-key"] == second.headers["idempotency-key"]


def test_it_raises_a_timeout_error_when_every_get_times_out(server, make_client):
    client = make_client(read_timeout=0.2)
    server.then(*[slow(0.6, respond(200, {"id": "job-1"})) for _ in range(3)])
    with pytest.raises(autoglm.APITimeoutError):
        client.jobs.get("job-1")
    assert len(server.attempts) == 3


def test_it_takes_a_per_call_timeout(server, make_client):
    client = make_client(max_retries=0, read_timeout=30)
    server.then(slow(0.6, respond(200, completion())))
    started = time.monotonic()
    with pytest.raises(autoglm.APITimeoutError):
        client.chat(messages=HELLO, model="test-model", timeout=0.2)
    assert time.monotonic() - started < 0.5


def test_it_resends_a_post_the_server_refused_or_a_gateway_lost(server, client):
    server.then(
        fail(429, "rate_limit_exceeded", "tokens"),
        fail(503, "overloaded"),
        respond(200, completion()),
    )
    assert chat(client)["content"] == "Hello there"
    assert len(server.attempts) == 3
    server.attempts.clear()
    server.then(fail(504, "gateway_timeout"), respond(200, completion()))
    assert chat(client)["content"] == "Hello there"
    assert len(server.attempts) == 2


def test_it_retries_504_for_a_get(server, client):
    server.then(fail(504, "gateway_timeout"), respond(200, {"id": "job-1", "status": "queued"}))
    assert client.jobs.get("job-1")["status"] == "queued"
    assert len(server.attempts) == 2


@pytest.mark.parametrize(
    ("status", "code", "exception"),
    [
        (500, "internal_error", autoglm.ServerError),
        (400, "invalid_request_error", autoglm.BadRequestError),
        (401, "invalid_api_key", autoglm.AuthenticationError),
        (403, "tenant_suspended", autoglm.PermissionDeniedError),
        (404, "model_not_found", autoglm.NotFoundError),
    ],
)
def test_it_does_not_retry_other_errors(server, client, status, code, exception):
    server.then(fail(status, code, "invalid_request_error"), respond(200, completion()))
    with pytest.raises(exception) as caught:
        chat(client)
    assert len(server.attempts) == 1
    assert caught.value.status_code == status and caught.value.code == code


def test_it_makes_one_attempt_with_max_retries_zero(server, make_client):
    client = make_client(max_retries=0)
    server.then(fail(503, "overloaded"), respond(200, completion()))
    with pytest.raises(autoglm.ServerError):
        chat(client)
    assert len(server.attempts) == 1


def test_it_refuses_more_than_three_attempts():
    with pytest.raises(ValueError):
        autoglm.AutoGLMClient(api_key="sk-test", max_retries=3)


def test_it_backs_off_exponentially_with_jitter(server, make_client):
    client = make_client(backoff_base=0.2, backoff_max=10)
    server.then(fail(503, "overloaded"), fail(503, "overloaded"), respond(200, completion()))
    chat(client)
    first, second, third = (a.at for a in server.attempts)
    assert 0.1 <= second - first <= 0.3  # 0.2 s, less up to half of it
    assert 0.2 <= third - second <= 0.5  # 0.4 s, less up to half of it


def test_it_raises_at_once_when_retry_after_is_longer_than_allowed(server, make_client):
    client = make_client(max_retry_after=5)
    server.then(fail(429, "rate_limit_exceeded", "requests", retry_after="30"))
    started = time.monotonic()
    with pytest.raises(autoglm.RateLimitError) as caught:
        chat(client)
    assert time.monotonic() - started < 1
    assert caught.value.retry_after == 30.0 and len(server.attempts) == 1


def test_it_retries_a_stream_the_server_refused_before_its_first_byte(server, client):
    server.then(fail(503, "overloaded"), fail(429, "rate_limit_exceeded"), chat_stream("Hel", "lo"))
    stream = client.chat(messages=HELLO, model="test-model", stream=True)
    assert list(stream) == ["Hel", "lo"]
    assert len(server.attempts) == 3
    assert stream.usage == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}


def test_it_never_retries_a_stream_after_its_first_byte(server, client):
    server.then(sse(chunk(""), chunk("Hel"), end=False), chat_stream("Hello"))
    stream = client.chat(messages=HELLO, model="test-model", stream=True)
    received = []
    with pytest.raises(autoglm.APIConnectionError):
        for delta in stream:
            received.append(delta)
    assert received == ["Hel"]
    assert len(server.attempts) == 1


def test_it_raises_when_a_stream_ends_without_its_end_marker(server, client):
    server.then(sse(chunk(""), chunk("Hel")))  # a clean close, but no [DONE]
    stream = client.chat(messages=HELLO, model="test-model", stream=True)
    with pytest.raises(autoglm.APIConnectionError, match="DONE"):
        list(stream)
    assert len(server.attempts) == 1


def test_it_raises_the_mapped_error_of_a_mid_stream_failure(server, client):
    failure = error_body("The worker restarted.", "generation_restarted", "server_error")
    server.then(sse(chunk(""), chunk("Hel"), failure, "data: [DONE]\n\n"))
    stream = client.chat(messages=HELLO, model="test-model", stream=True)
    with pytest.raises(autoglm.ServerError) as caught:
        list(stream)
    assert caught.value.code == "generation_restarted"
    assert caught.value.status_code is None
    assert caught.value.request_id == "req_test_1"
    assert stream.content == "Hel"
    assert len(server.attempts) == 1


def test_it_resumes_job_events_after_a_dropped_connection(server, client):
    def token(n: int, text: str) -> str:
        return f'id: 1-{n}\nevent: token\ndata: {{"text": "{text}"}}\n\n'

    done = 'id: 1-4\nevent: done\ndata: {"status": "succeeded", "finish_reason": "stop"}\n\n'
    server.then(
        sse(token(1, "a"), token(2, "b"), end=False, retry_ms=10),
        drop(),  # the first reconnection fails too; the SDK tries again
        sse(token(3, "c"), done, retry_ms=10),
    )
    events = list(client.jobs.events("job-1"))
    assert [e["event"] for e in events] == ["token", "token", "token", "done"]
    assert "".join(e["data"]["text"] for e in events if e["event"] == "token") == "abc"
    assert events[-1]["id"] == "1-4" and events[-1]["data"]["status"] == "succeeded"
    assert [a.path for a in server.attempts] == ["/api/v1/jobs/job-1/events"] * 3
    assert "last-event-id" not in server.attempts[0].headers
    assert server.attempts[1].headers["last-event-id"] == "1-2"
    assert server.attempts[2].headers["last-event-id"] == "1-2"


def test_it_gives_up_on_job_events_that_keep_dropping(server, make_client):
    client = make_client(max_retries=1)
    server.then(sse(end=False, retry_ms=10), sse(end=False, retry_ms=10), sse(retry_ms=10))
    with pytest.raises(autoglm.APIConnectionError):
        list(client.jobs.events("job-1"))
    assert len(server.attempts) == 2


def test_it_reports_a_refused_connection_after_retrying(make_client):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        client = make_client(base_url=f"http://127.0.0.1:{port}")
        with pytest.raises(autoglm.APIConnectionError) as caught:
            chat(client)
    assert caught.value.retryable and caught.value.status_code is None


def test_it_retries_with_the_async_client(server):
    server.then(
        fail(503, "overloaded"),
        respond(200, completion("async answer")),
        fail(429, "rate_limit_exceeded", "requests"),
        chat_stream("as", "ync"),
        fail(502, "bad_gateway"),  # a POST a gateway may have passed on: resent, same key
        respond(200, completion("after the gateway")),
    )

    async def run() -> tuple[str, list[str], autoglm.Usage | None]:
        async with make_async_client(server) as client:
            whole = await client.chat(messages=HELLO, model="test-model")
            stream = await client.chat(messages=HELLO, model="test-model", stream=True)
            pieces = [delta async for delta in stream]
            after = await client.chat(messages=HELLO, model="test-model")
            assert after["content"] == "after the gateway"
            return whole["content"], pieces, stream.usage

    content, pieces, usage = asyncio.run(run())
    assert content == "async answer"
    assert pieces == ["as", "ync"] and usage and usage["total_tokens"] == 5
    assert len(server.attempts) == 6
    assert (
        server.attempts[4].headers["idempotency-key"]
        == server.attempts[5].headers["idempotency-key"]
    )


def test_it_honours_retry_after_with_the_async_client(server):
    server.then(fail(503, "overloaded", retry_after="1"), respond(200, completion()))

    async def run() -> None:
        async with make_async_client(server) as client:
            await client.chat(messages=HELLO, model="test-model")

    asyncio.run(run())
    first, second = server.attempts
    assert 0.95 <= second.at - first.at < 1.6
