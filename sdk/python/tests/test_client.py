"""The client's plumbing against the fault-injecting server: configuration, headers, error
mapping, streams, sessions and jobs."""

from __future__ import annotations

import asyncio

import autoglm
import pytest
from faultserver import chat_stream, completion, fail, make_async_client, respond, sse

HELLO = [{"role": "user", "content": "Hello"}]


def test_it_reads_base_url_and_api_key_from_the_environment(server, monkeypatch):
    monkeypatch.setenv("AUTOGLM_BASE_URL", server.url + "/")
    monkeypatch.setenv("AUTOGLM_API_KEY", "sk-from-env")
    server.then(respond(200, completion()))
    with autoglm.AutoGLMClient() as client:
        assert client.base_url == server.url
        client.chat(messages=HELLO, model="m")
    headers = server.attempts[0].headers
    assert headers["authorization"] == "Bearer sk-from-env"
    assert headers["user-agent"] == f"autoglm-python/{autoglm.__version__}"
    assert headers["x-request-id"].startswith("req_")


def test_it_prefers_arguments_to_the_environment(server, monkeypatch):
    monkeypatch.setenv("AUTOGLM_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AUTOGLM_API_KEY", "sk-from-env")
    server.then(respond(200, completion()))
    with autoglm.AutoGLMClient(api_key="sk-arg", base_url=server.url + "/v1") as client:
        assert client.base_url == server.url  # an OpenAI-style /v1 is dropped
        client.chat(messages=HELLO, model="m")
    assert server.attempts[0].headers["authorization"] == "Bearer sk-arg"


def test_it_returns_the_answer_as_a_dict(server, client):
    server.then(respond(200, completion("Hi!", "length")))
    response = client.chat(messages=HELLO, model="m", temperature=0.7, max_tokens=256, top_p=0.9)
    assert response == {
        "content": "Hi!",
        "finish_reason": "length",
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
        "id": "chatcmpl-test",
        "model": "test-model",
        "raw": completion("Hi!", "length"),
    }
    attempt = server.attempts[0]
    assert attempt.method == "POST" and attempt.path == "/v1/chat/completions"
    assert attempt.body["temperature"] == 0.7 and attempt.body["top_p"] == 0.9


def test_it_maps_every_status_to_its_exception(server, client):
    cases = [
        (400, autoglm.BadRequestError),
        (401, autoglm.AuthenticationError),
        (403, autoglm.PermissionDeniedError),
        (404, autoglm.NotFoundError),
        (409, autoglm.ConflictError),
        (418, autoglm.APIStatusError),
        (500, autoglm.ServerError),
    ]
    for status, _ in cases:
        body = {"error": {"message": "no", "type": "t", "param": "p", "code": f"c{status}"}}
        server.then(respond(status, body))
    for status, exception in cases:
        with pytest.raises(exception) as caught:
            client.request("GET", "/anything")
        error = caught.value
        assert type(error) is exception
        assert isinstance(error, autoglm.AutoGLMError)
        assert (error.status_code, error.code, error.param, error.message, error.type) == (
            status,
            f"c{status}",
            "p",
            "no",
            "t",
        )
        assert error.request_id and error.request_id.startswith("req_test_")
        assert error.response is not None and error.body["error"]["code"] == f"c{status}"


def test_it_maps_an_error_body_that_is_not_json(server, client):
    server.then(respond(400, None))
    with pytest.raises(autoglm.BadRequestError) as caught:
        client.request("GET", "/x")
    assert caught.value.code is None and "400" in caught.value.message


def test_it_gives_the_usage_at_the_end_of_a_stream(server, client):
    server.then(chat_stream("Hel", "lo", " world"))

    def relay(stream):
        usage = yield from stream
        yield usage

    with client.chat(messages=HELLO, model="m", stream=True) as stream:
        items = list(relay(stream))
    assert items[:-1] == ["Hel", "lo", " world"]
    assert items[-1] == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    assert stream.content == "Hello world" and stream.finish_reason == "stop"
    assert stream.id == "chatcmpl-test" and stream.model == "test-model"
    body = server.attempts[0].body
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert server.attempts[0].headers["accept"] == "text/event-stream"


def test_it_raises_a_stream_error_before_iterating(server, client):
    server.then(fail(400, "invalid_request_error", "invalid_request_error"))
    with pytest.raises(autoglm.BadRequestError):
        client.chat(messages=HELLO, model="m", stream=True)


def test_it_ignores_keep_alive_comments_in_a_stream(server, client):
    from faultserver import chunk

    server.then(sse(": keep-alive\n\n", chunk("a"), ": keep-alive\n\n", "data: [DONE]\n\n"))
    assert list(client.chat(messages=HELLO, model="m", stream=True)) == ["a"]


def test_it_creates_lists_and_iterates_sessions(server, client):
    page1 = {"object": "list", "data": [{"id": "s2"}, {"id": "s1"}], "has_more": True}
    page1["last_id"] = "s1"
    page2 = {"object": "list", "data": [{"id": "s0"}], "has_more": False, "last_id": "s0"}
    server.then(respond(201, {"id": "s2", "object": "chat.session"}), respond(200, page1))
    server.then(respond(200, page1), respond(200, page2))
    created = client.sessions.create(title="t", system_prompt="Be brief.", params={"seed": 1})
    assert created["id"] == "s2"
    assert client.sessions.list(limit=2)["data"][0]["id"] == "s2"
    assert [s["id"] for s in client.sessions.iterate(page_size=2)] == ["s2", "s1", "s0"]
    create, listing, first, second = server.attempts
    assert create.body == {"title": "t", "system_prompt": "Be brief.", "params": {"seed": 1}}
    assert listing.path == "/api/v1/sessions?limit=2"
    assert first.path == "/api/v1/sessions?limit=2"
    assert second.path == "/api/v1/sessions?limit=2&after=s1"


def test_it_sends_a_message_and_waits_for_the_job(server, client):
    queued = {"id": "j1", "status": "queued"}
    done = {"id": "j1", "status": "succeeded", "message": {"content": "Hi!"}}
    server.then(respond(202, queued), respond(200, {**queued, "status": "running"}))
    server.then(respond(200, done))
    job = client.sessions.send("s1", "Hello", max_tokens=8, seed=3, poll_interval=0.01)
    assert job == done
    post, *polls = server.attempts
    assert post.path == "/api/v1/sessions/s1/messages"
    assert post.body == {"content": "Hello", "max_tokens": 8, "seed": 3}
    assert [p.path for p in polls] == ["/api/v1/jobs/j1"] * 2


def test_it_branches_regenerates_and_reads_the_tree(server, client):
    queued = {"id": "j1", "status": "queued"}
    server.then(respond(202, queued), respond(202, queued), respond(202, queued))
    server.then(respond(200, {"data": []}), respond(200, {"id": "s1"}))
    client.sessions.send("s1", "Edited", parent_id="m1", wait=False)
    client.sessions.send("s1", "From the start", parent_id=None, wait=False)
    client.sessions.regenerate("s1", message_id="m2")
    client.sessions.messages("s1", view="tree")
    client.sessions.update("s1", current_message_id="m3")
    edit, root, again, tree, switch = server.attempts
    assert edit.body == {"content": "Edited", "parent_id": "m1"}
    assert root.body == {"content": "From the start", "parent_id": None}
    assert (again.path, again.body) == ("/api/v1/sessions/s1/regenerate", {"message_id": "m2"})
    assert tree.path == "/api/v1/sessions/s1/messages?view=tree"
    assert switch.body == {"current_message_id": "m3"}


def test_it_pins_archives_tags_and_shares(server, client):
    share = {"id": "sh1", "object": "chat.share", "revoked_at": None}
    server.then(respond(200, {"id": "s1"}), respond(200, {"data": []}))
    server.then(respond(201, share), respond(200, {"data": [share]}), respond(200, share))
    server.then(respond(204, None))
    client.sessions.update("s1", pinned=True, archived=False, tags=("work", "q3"))
    client.sessions.list(archived=True, tag="work")
    assert client.sessions.share("s1") == share
    client.sessions.shares("s1", limit=5)
    client.shares.get("sh1")
    assert client.shares.revoke("sh1") is None
    organise, listing, made, links, got, revoked = server.attempts
    assert organise.body == {"pinned": True, "archived": False, "tags": ["work", "q3"]}
    assert listing.path == "/api/v1/sessions?archived=true&tag=work"
    assert (made.method, made.path) == ("POST", "/api/v1/sessions/s1/shares")
    assert links.path == "/api/v1/sessions/s1/shares?limit=5"
    assert (got.path, revoked.method, revoked.path) == (
        "/api/v1/shares/sh1",
        "DELETE",
        "/api/v1/shares/sh1",
    )


def test_it_raises_the_error_of_a_failed_job(server, client):
    error = {"message": "Too long.", "type": "invalid_request_error", "param": "messages"}
    failed = {"id": "j1", "status": "failed", "error": {**error, "code": "context_length_exceeded"}}
    server.then(respond(202, {"id": "j1", "status": "queued"}), respond(200, failed))
    with pytest.raises(autoglm.BadRequestError) as caught:
        client.sessions.send("s1", "Hello", poll_interval=0.01)
    assert caught.value.code == "context_length_exceeded" and caught.value.param == "messages"
    assert caught.value.job == failed


def test_it_times_out_waiting_for_a_job(server, client):
    running = {"id": "j1", "status": "running"}
    server.then(*[respond(200, running) for _ in range(50)])
    with pytest.raises(autoglm.APITimeoutError) as caught:
        client.jobs.wait("j1", timeout=0.2, poll_interval=0.05)
    assert caught.value.job == running


def test_it_returns_a_queued_job_without_waiting(server, client):
    server.then(respond(202, {"id": "j1", "status": "queued"}), respond(200, {"id": "j1"}))
    assert client.sessions.send("s1", "Hi", wait=False)["status"] == "queued"
    assert client.jobs.cancel("j1") == {"id": "j1"}
    assert [a.path for a in server.attempts][-1] == "/api/v1/jobs/j1/cancel"


def test_it_quotes_ids_into_the_path(server, client):
    server.then(respond(200, {}))
    client.jobs.get("../sessions")
    assert server.attempts[0].path == "/api/v1/jobs/..%2Fsessions"


def test_it_starts_job_events_after_a_given_id(server, client):
    done = 'id: 1-9\nevent: done\ndata: {"status": "cancelled"}\n\n'
    server.then(sse(done))
    events = list(client.jobs.events("j1", last_event_id="1-8"))
    assert events == [{"id": "1-9", "event": "done", "data": {"status": "cancelled"}}]
    assert server.attempts[0].headers["last-event-id"] == "1-8"


def test_it_follows_sessions_and_events_with_the_async_client(server):
    token = 'id: 1-1\nevent: token\ndata: {"text": "hi"}\n\n'
    error = 'id: 1-2\nevent: error\ndata: {"status": "failed", "error": {"code": "x"}}\n\n'
    server.then(respond(201, {"id": "s1"}), respond(202, {"id": "j1", "status": "queued"}))
    server.then(sse(token, error), respond(200, {"object": "list", "data": [{"id": "s1"}]}))
    server.then(respond(200, {"data": [{"id": "m"}]}))

    async def run() -> tuple:
        async with make_async_client(server) as client:
            session = await client.sessions.create(title="a")
            job = await client.sessions.send(session["id"], "Hi", wait=False)
            events = [e async for e in client.jobs.events(job["id"])]
            sessions = [s async for s in client.sessions.iterate()]
            models = await client.models.list()
            return events, sessions, models

    events, sessions, models = asyncio.run(run())
    assert [e["event"] for e in events] == ["token", "error"]
    assert events[1]["data"]["error"]["code"] == "x"
    assert sessions == [{"id": "s1"}] and models == [{"id": "m"}]
