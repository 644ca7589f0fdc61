"""The sampling parameters of the native API on a real worker (the demo model): a session's
defaults and a message's own reach the engine, and logprobs come back on the job. Each answer
is asked in a fresh session, so that only the parameters differ."""

import pytest

from .conftest import wait_for_job

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]

# 40 tokens: long enough for the random demo model to repeat itself, which penalties change.
PENALTIES = {"frequency_penalty": 2.0, "presence_penalty": 2.0}


def answer(client, session_params: dict | None = None, **params) -> dict:
    session = client.post("/api/v1/sessions", {"params": session_params or {}}, format="json")
    assert session.status_code == 201, session.content
    body = {"content": "Tell me a long story.", "max_tokens": 40, "temperature": 0, **params}
    response = client.post(f"/api/v1/sessions/{session.json()['id']}/messages", body, format="json")
    assert response.status_code == 202, response.content
    return wait_for_job(client, response.json()["id"])


def test_penalties_and_logprobs_through_the_native_api(celery_worker, client_a):
    plain = answer(client_a)
    assert plain["logprobs"] is None

    penalized = answer(client_a, **PENALTIES)
    assert penalized["message"]["content"] != plain["message"]["content"]
    # A session's defaults apply to its messages.
    assert answer(client_a, PENALTIES)["message"]["content"] == penalized["message"]["content"]

    with_logprobs = answer(client_a, logprobs=True, top_logprobs=2)
    content = with_logprobs["message"]["content"]
    assert content == plain["message"]["content"]
    entries = with_logprobs["logprobs"]
    ended = with_logprobs["finish_reason"] == "stop"  # its end-of-turn token has none
    assert len(entries) == with_logprobs["usage"]["completion_tokens"] - ended
    assert all(entry["logprob"] <= 0 for entry in entries)
    assert all(len(entry["top_logprobs"]) == 2 for entry in entries)
