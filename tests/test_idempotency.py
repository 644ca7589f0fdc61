"""Idempotency-Key on the POSTs that create things: a retried request creates nothing twice.

The native endpoints run without a worker (autoglm-idle: its jobs stay queued); the
completions run on the live stack, with the real worker.
"""

import json
import time

import httpx
import pytest
from django.test import RequestFactory, override_settings

from chat.models import ChatJob, ChatSession, Message
from chat.presenters import completion_id
from tenants.idempotency import caller_scope, fingerprint, idempotency_begin
from tenants.models import ApiKey, Tenant
from tenants.services import api_key_create

IDLE = "autoglm-idle"  # no worker serves it: its jobs stay queued
HEADERS = {"HTTP_IDEMPOTENCY_KEY": "retry-me-1"}


def error_of(response, status: int) -> dict:
    assert response.status_code == status, response.content
    return response.json()["error"]


def create_session(client, body=None, **headers):
    return client.post("/api/v1/sessions", body or {"title": "t"}, format="json", **headers)


@pytest.fixture
def idle_session(client_a) -> dict:
    return create_session(client_a, {"model": IDLE}).json()


def post_message(client, session: dict, content: str = "hello", **headers):
    path = f"/api/v1/sessions/{session['id']}/messages"
    return client.post(path, {"content": content}, format="json", **headers)


@pytest.mark.django_db
def test_it_creates_one_session_for_a_retried_post(client_a):
    first = create_session(client_a, **HEADERS)
    again = create_session(client_a, **HEADERS)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first
    assert ChatSession.objects.count() == 1


@pytest.mark.django_db
def test_it_queues_one_job_and_one_message_for_a_retried_message(client_a, idle_session):
    # Without the key the retry is a second message: 409, as the first answer is still queued.
    first = post_message(client_a, idle_session, **HEADERS)
    again = post_message(client_a, idle_session, **HEADERS)
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    assert again["Idempotent-Replayed"] == "true"
    assert ChatJob.objects.count() == 1
    assert Message.objects.filter(role="user").count() == 1


@pytest.mark.django_db
def test_it_creates_one_api_key_for_a_retried_post(client, tenant_a):
    client.login(username="alice", password="alice-pw")
    body = {"name": "ci"}
    first = client.post("/api/v1/keys", body, content_type="application/json", **HEADERS)
    again = client.post("/api/v1/keys", body, content_type="application/json", **HEADERS)
    assert first.status_code == again.status_code == 201
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["key"] == first.json()["key"]  # the secret, lost with the first answer
    assert ApiKey.objects.filter(tenant=tenant_a, name="ci").count() == 1


@pytest.mark.django_db
def test_it_refuses_the_same_key_with_another_body(client_a):
    assert create_session(client_a, {"title": "one"}, **HEADERS).status_code == 201
    error = error_of(create_session(client_a, {"title": "two"}, **HEADERS), 422)
    assert error["code"] == "idempotency_key_reused"
    assert error["param"] == "Idempotency-Key"
    assert ChatSession.objects.count() == 1


@pytest.mark.django_db
def test_it_refuses_the_same_key_on_another_endpoint(client_a, idle_session):
    assert post_message(client_a, idle_session, **HEADERS).status_code == 202
    error = error_of(create_session(client_a, **HEADERS), 422)
    assert error["code"] == "idempotency_key_reused"


@pytest.mark.django_db
def test_it_answers_409_while_the_first_request_is_in_flight(client_a, tenant_a):
    # The first request, holding the key while it creates its session (another replica).
    key = ApiKey.objects.get(tenant=tenant_a)
    first = RequestFactory().post(
        "/api/v1/sessions", data={"title": "t"}, content_type="application/json", **HEADERS
    )
    scope = caller_scope(tenant_a, key, None)
    assert idempotency_begin(first, scope=scope, data={"title": "t"}) is not None
    response = create_session(client_a, **HEADERS)
    error = error_of(response, 409)
    assert error["code"] == "idempotency_key_in_flight"
    assert int(response["retry-after"]) >= 1
    assert ChatSession.objects.count() == 0


@pytest.mark.django_db
def test_it_keeps_keys_of_other_callers_apart(client_a, client_b, tenant_a):
    from tests.conftest import api_client

    second_key_of_a = api_client(api_key_create(tenant=tenant_a, name="a2")[1])
    answers = [create_session(c, **HEADERS) for c in (client_a, client_b, second_key_of_a)]
    assert [a.status_code for a in answers] == [201, 201, 201]
    assert len({a.json()["id"] for a in answers}) == 3
    assert create_session(client_b, **HEADERS).json()["id"] == answers[1].json()["id"]
    assert ChatSession.objects.count() == 3
    assert Tenant.objects.get(slug="tenant-b").chat_sessions.count() == 1


@pytest.mark.django_db
def test_it_forgets_a_key_after_its_ttl(client_a):
    with override_settings(AUTOGLM_IDEMPOTENCY_TTL=1):
        first = create_session(client_a, **HEADERS)
        assert create_session(client_a, **HEADERS).json()["id"] == first.json()["id"]
        time.sleep(1.2)
        again = create_session(client_a, **HEADERS)
    assert again.json()["id"] != first.json()["id"]
    assert "Idempotent-Replayed" not in again
    assert ChatSession.objects.count() == 2


@pytest.mark.django_db
def test_it_does_not_keep_a_failed_request(client_a):
    assert error_of(create_session(client_a, {"title": 5}, **HEADERS), 400)
    # Nothing was created, so the key is free for the corrected request.
    created = create_session(client_a, {"title": "ok"}, **HEADERS)
    assert created.status_code == 201
    assert create_session(client_a, {"title": "ok"}, **HEADERS).json() == created.json()
    assert ChatSession.objects.count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize("key", ["", "x" * 256, "caf\u00e9", "tab\there"])
def test_it_refuses_a_malformed_key(client_a, key):
    error = error_of(create_session(client_a, HTTP_IDEMPOTENCY_KEY=key), 400)
    assert error["code"] == "invalid_idempotency_key"
    assert ChatSession.objects.count() == 0


def test_the_fingerprint_ignores_key_order_and_spacing():
    assert fingerprint("POST", "/p", {"a": 1, "b": [2]}) == fingerprint(
        "POST", "/p", json.loads('{ "b": [2],  "a": 1 }')
    )
    assert fingerprint("POST", "/p", {"a": 1}) != fingerprint("POST", "/q", {"a": 1})


# -- completions, on the live stack ----------------------------------------------------------

COMPLETION = {
    "model": "autoglm-demo",
    "max_tokens": 24,
    "temperature": 0,
    "messages": [{"role": "user", "content": "Write about the sea."}],
}


@pytest.fixture
def http(live_server_url, key_a):
    headers = {"Authorization": f"Bearer {key_a}"}
    with httpx.Client(base_url=live_server_url, headers=headers, timeout=60) as client:
        yield client


def stream_chunks(response: httpx.Response) -> list[dict]:
    chunks = []
    for line in response.iter_lines():
        if line.startswith("data: ") and line != "data: [DONE]":
            chunks.append(json.loads(line.removeprefix("data: ")))
    return chunks


def text_of(chunks: list[dict]) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


@pytest.mark.django_db(transaction=True)
def test_it_answers_a_retried_completion_with_its_one_job(http):
    key = {"Idempotency-Key": "completion-1"}
    first = http.post("/v1/chat/completions", json=COMPLETION, headers=key)
    again = http.post("/v1/chat/completions", json=COMPLETION, headers=key)
    assert first.status_code == again.status_code == 200, again.text
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert ChatJob.objects.count() == 1
    other = http.post("/v1/chat/completions", json={**COMPLETION, "seed": 1}, headers=key)
    assert other.status_code == 422 and other.json()["error"]["code"] == "idempotency_key_reused"


@pytest.mark.django_db(transaction=True)
def test_a_retried_stream_reattaches_to_its_job_from_the_start(http):
    key = {"Idempotency-Key": "stream-1"}
    body = {**COMPLETION, "stream": True, "max_tokens": 64}
    with http.stream("POST", "/v1/chat/completions", json=body, headers=key) as response:
        for line in response.iter_lines():
            if '"content":"' in line and '"content":""' not in line:
                break  # the connection is lost after the first text
    with http.stream("POST", "/v1/chat/completions", json=body, headers=key) as again:
        assert again.headers["idempotent-replayed"] == "true"
        chunks = stream_chunks(again)
    job = ChatJob.objects.get()  # one job: the retry made none
    assert job.status == "succeeded"  # the hang-up of a keyed stream did not cancel it
    assert {c["id"] for c in chunks} == {completion_id(job)}
    assert text_of(chunks) == job.output  # the whole answer, from its start, once


@pytest.mark.django_db
def test_the_kept_answer_of_a_new_key_does_not_hold_its_secret_in_the_clear(client, tenant_a):
    """Redis keeps the answer replayed for a key; the new API key's secret in it is sealed."""
    from autoglm_site.redisconn import redis_client

    client.login(username="alice", password="alice-pw")

    def create():
        return client.post(
            "/api/v1/keys",
            {"name": "sealed"},
            content_type="application/json",
            HTTP_IDEMPOTENCY_KEY="seal-1",
        )

    response = create()
    assert response.status_code == 201, response.content
    secret = response.json()["key"]
    stored = [
        redis_client().get(name) for name in redis_client().scan_iter("autoglm:idempotency:*")
    ]
    assert stored and all(secret not in value and "seal-1" not in value for value in stored)
    assert create().json()["key"] == secret
