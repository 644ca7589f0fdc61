"""Parameters are checked before sending: a bad one raises ValidationError and no request
reaches the (fault-injecting) server."""

from __future__ import annotations

import math

import autoglm
import pytest

HELLO = [{"role": "user", "content": "Hello"}]


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": 2.01}, "temperature"),
        ({"temperature": "0.7"}, "temperature"),
        ({"temperature": True}, "temperature"),
        ({"temperature": math.nan}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"top_p": -1}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_p": "1"}, "top_p"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": -5}, "max_tokens"),
        ({"max_tokens": 1.0}, "max_tokens"),
        ({"max_tokens": "256"}, "max_tokens"),
        ({"max_tokens": False}, "max_tokens"),
        ({"seed": 1.5}, "seed"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"stop": []}, "stop"),
        ({"stop": ""}, "stop"),
        ({"stop": ["ok", 3]}, "stop"),
        ({"user": 42}, "user"),
    ],
)
def test_it_refuses_a_bad_parameter_without_sending(server, client, params, param):
    with pytest.raises(autoglm.ValidationError) as caught:
        client.chat(messages=HELLO, model="test-model", **params)
    error = caught.value
    assert error.param == param
    assert error.status_code is None and error.request_id is None
    assert isinstance(error, autoglm.BadRequestError) and isinstance(error, ValueError)
    assert server.attempts == []


@pytest.mark.parametrize(
    ("messages", "param"),
    [
        ([], "messages"),
        ("Hello", "messages"),
        ({"role": "user", "content": "Hello"}, "messages"),
        (["Hello"], "messages[0]"),
        ([{"role": "robot", "content": "Hi"}], "messages[0].role"),
        ([{"content": "Hi"}], "messages[0].role"),
        ([{"role": "user"}], "messages[0].content"),
        ([{"role": "user", "content": 5}], "messages[0].content"),
        ([{"role": "user", "content": [{"type": "image_url"}]}], "messages[0].content"),
        ([HELLO[0], {"role": "user", "content": None}], "messages[1].content"),
    ],
)
def test_it_refuses_bad_messages_without_sending(server, client, messages, param):
    with pytest.raises(autoglm.ValidationError) as caught:
        client.chat(messages=messages, model="test-model")
    assert caught.value.param == param
    assert server.attempts == []


@pytest.mark.parametrize("model", ["", "   ", None, 3])
def test_it_refuses_a_missing_model_without_sending(server, client, model):
    with pytest.raises(autoglm.ValidationError) as caught:
        client.chat(messages=HELLO, model=model)
    assert caught.value.param == "model"
    assert server.attempts == []


def test_it_accepts_the_edges_of_each_range(server, client):
    from faultserver import completion, respond

    server.then(*[respond(200, completion()) for _ in range(3)])
    client.chat(messages=HELLO, model="m", temperature=0, top_p=1, max_tokens=1, seed=-3)
    client.chat(messages=HELLO, model="m", temperature=2, top_p=1e-9, stop=["a", "b", "c", "d"])
    parts = [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]
    client.chat(messages=parts, model="m", temperature=0.7, top_p=0.9, max_tokens=256, stop="x")
    bodies = [a.body for a in server.attempts]
    assert bodies[0] == {
        "model": "m",
        "messages": HELLO,
        "temperature": 0,
        "top_p": 1,
        "max_tokens": 1,
        "seed": -3,
    }
    assert bodies[1]["stop"] == ["a", "b", "c", "d"] and "stream" not in bodies[1]
    assert bodies[2]["stop"] == "x" and bodies[2]["messages"] == parts


def test_it_checks_session_parameters_without_sending(server, client):
    with pytest.raises(autoglm.ValidationError) as caught:
        client.sessions.send("s-1", "Hi", temperature=3)
    assert caught.value.param == "temperature"
    with pytest.raises(autoglm.ValidationError) as caught:
        client.sessions.send("s-1", "  ")
    assert caught.value.param == "content"
    with pytest.raises(autoglm.ValidationError) as caught:
        client.sessions.create(params={"top_p": 0})
    assert caught.value.param == "top_p"
    with pytest.raises(autoglm.ValidationError) as caught:
        client.sessions.update("s-1", params={"max_tokens": 0})
    assert caught.value.param == "max_tokens"
    assert server.attempts == []


def test_it_checks_the_async_client_too(server):
    import asyncio

    from faultserver import make_async_client

    async def run() -> None:
        async with make_async_client(server) as client:
            with pytest.raises(autoglm.ValidationError):
                await client.chat(messages=HELLO, model="m", top_p=0)
            with pytest.raises(autoglm.ValidationError):
                await client.chat(messages=HELLO, model="m", stream=True, max_tokens=0)
            with pytest.raises(autoglm.ValidationError):
                await client.sessions.send("s-1", "Hi", max_tokens=0)

    asyncio.run(run())
    assert server.attempts == []


def test_it_sends_what_extra_body_says_unchecked(server, client):
    from faultserver import fail

    server.then(fail(400, "invalid_request_error", "invalid_request_error"))
    with pytest.raises(autoglm.BadRequestError):
        client.chat(messages=HELLO, model="m", extra_body={"temperature": 5})
    assert server.attempts[0].body["temperature"] == 5


def test_it_needs_an_api_key(monkeypatch):
    monkeypatch.delenv("AUTOGLM_API_KEY", raising=False)
    with pytest.raises(autoglm.AutoGLMError, match="AUTOGLM_API_KEY"):
        autoglm.AutoGLMClient()


def test_it_refuses_a_base_url_that_is_not_http():
    with pytest.raises(autoglm.AutoGLMError, match="base_url"):
        autoglm.AutoGLMClient(api_key="sk-x", base_url="127.0.0.1:8000")
