"""Continue an answer cut by max_tokens: the prompt ends inside the partial answer, the new text
is appended to the same message, and the refusals (409 busy, 400 not the last answer, 404 for
another tenant)."""

import pytest

from chat import events, jobs
from chat.models import ChatJob, Message
from engine.tests.conftest import tiny_build, tiny_loaded, tiny_model_path  # noqa: F401
from tests.conftest import wait_for_job
from workers.prompts import encode_prompt, fit_messages

PARTIAL = "The sea is wide and"
CONVERSATION = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Tell me about the sea."},
    {"role": "assistant", "content": PARTIAL},
]


def error_of(response, status: int) -> dict:
    assert response.status_code == status, response.content
    return response.json()["error"]


# -- the prompt the worker renders -------------------------------------------------------------


def test_it_ends_the_prompt_inside_the_partial_answer(tiny_loaded):  # noqa: F811
    tokenizer = tiny_loaded.tokenizer
    ids = encode_prompt(tiny_loaded, CONVERSATION, continue_final=True)
    text = tokenizer.decode(ids)
    assert text.endswith(PARTIAL), text[-80:]
    assert text.count("<|im_end|>") == 2  # the system and user turns end; the answer does not
    assert ids[-1] != tokenizer.convert_tokens_to_ids("<|im_end|>")
    # A new answer, by contrast, starts a fresh assistant turn after the last one closed.
    fresh = tokenizer.decode(encode_prompt(tiny_loaded, CONVERSATION))
    assert fresh.endswith(f"{PARTIAL}<|im_end|>\n<|im_start|>assistant\n")
    # Fitting the window renders it the same way, keeping the partial answer last.
    kept, dropped = fit_messages(tiny_loaded, CONVERSATION, max_tokens=16, continue_final=True)
    assert (kept, dropped) == (CONVERSATION, 0)


# -- the API, with the worker's part played by chat.jobs -----------------------------------------


def _answered(client, session_id: str, *, text: str, finish_reason: str = "length") -> Message:
    """Post a message and end its job as a worker would, with ``text`` as the answer."""
    job = client.post(
        f"/api/v1/sessions/{session_id}/messages", {"content": "Tell me"}, format="json"
    ).json()
    return _finish(job["id"], text=text, finish_reason=finish_reason).assistant_message


def _finish(job_id: str, *, text: str, finish_reason: str = "length") -> ChatJob:
    running = jobs.job_start(job_id=job_id, worker="test-worker")
    return jobs.job_finish(
        job=running,
        text=text,
        prompt_tokens=9,
        completion_tokens=4,
        finish_reason=finish_reason,
    )


@pytest.fixture
def session_id(client_a) -> str:
    body = {"title": "sea", "system_prompt": "You are terse.", "params": {"max_tokens": 4}}
    return client_a.post("/api/v1/sessions", body, format="json").json()["id"]


@pytest.mark.django_db
def test_it_appends_the_continuation_to_the_same_message(client_a, session_id):
    answer = _answered(client_a, session_id, text=PARTIAL)
    url = f"/api/v1/sessions/{session_id}/messages/{answer.id}/continue"
    response = client_a.post(url, {"max_tokens": 6}, format="json")
    assert response.status_code == 202, response.content
    created = ChatJob.objects.get(pk=response.json()["id"])
    assert created.continued_message_id == answer.id and created.assistant_message is None
    assert created.params["continue_final_message"] is True
    assert created.params["max_tokens"] == 6  # the request's, over the session's 4
    # The prompt: the conversation up to and including the partial answer, which ends it.
    prompt = jobs.job_prompt_messages(job=created)
    assert [m["role"] for m in prompt] == ["system", "user", "assistant"]
    assert prompt[-1]["content"] == PARTIAL

    # While it runs, neither another continuation nor a new message may start.
    assert error_of(client_a.post(url, format="json"), 409)["code"] == "conflict"
    messages_url = f"/api/v1/sessions/{session_id}/messages"
    assert error_of(client_a.post(messages_url, {"content": "x"}, format="json"), 409)

    finished = _finish(str(created.id), text=" and deep.")
    answer.refresh_from_db()
    assert answer.content == PARTIAL + " and deep."
    assert Message.objects.filter(session_id=session_id).count() == 2  # no new message
    assert finished.assistant_message is None
    kind, done = events.done_event(finished)
    assert kind == "done" and done["message_id"] == str(answer.id) and done["continued"]
    job = client_a.get(f"/api/v1/jobs/{created.id}").json()
    assert job["message"]["id"] == str(answer.id)
    assert job["message"]["content"] == PARTIAL + " and deep."
    stored = Message.objects.filter(session_id=session_id).order_by("created_at")
    assert [m.content for m in stored] == ["Tell me", PARTIAL + " and deep."]


@pytest.mark.django_db
def test_a_stopped_continuation_keeps_what_it_wrote(client_a, session_id):
    answer = _answered(client_a, session_id, text=PARTIAL)
    url = f"/api/v1/sessions/{session_id}/messages/{answer.id}/continue"
    job = client_a.post(url, format="json").json()
    _finish(job["id"], text=" and", finish_reason="cancelled")
    answer.refresh_from_db()
    assert answer.content == PARTIAL + " and"
    # Cancelled while queued, it changes nothing.
    again = client_a.post(url, format="json").json()
    assert client_a.post(f"/api/v1/jobs/{again['id']}/cancel").json()["status"] == "cancelled"
    answer.refresh_from_db()
    assert answer.content == PARTIAL + " and"


@pytest.mark.django_db
def test_it_continues_only_the_last_answer(client_a, session_id):
    first = _answered(client_a, session_id, text="one")
    user = Message.objects.get(session_id=session_id, role="user")
    base = f"/api/v1/sessions/{session_id}/messages"
    error = error_of(client_a.post(f"{base}/{user.id}/continue", format="json"), 400)
    assert error["param"] == "message_id" and "answer" in error["message"]
    _answered(client_a, session_id, text="two")
    error = error_of(client_a.post(f"{base}/{first.id}/continue", format="json"), 400)
    assert "last message" in error["message"]
    missing = "00000000-0000-0000-0000-000000000000"
    assert error_of(client_a.post(f"{base}/{missing}/continue", format="json"), 404)
    assert error_of(
        client_a.post(f"{base}/{first.id}/continue", {"max_tokens": 0}, format="json"), 400
    )
    assert ChatJob.objects.filter(continued_message__isnull=False).count() == 0


@pytest.mark.django_db
def test_another_tenant_cannot_continue_an_answer(client_a, client_b, session_id):
    answer = _answered(client_a, session_id, text=PARTIAL)
    url = f"/api/v1/sessions/{session_id}/messages/{answer.id}/continue"
    assert error_of(client_b.post(url, format="json"), 404)["code"] == "not_found"
    # Nor through a session of its own.
    own = client_b.post("/api/v1/sessions", {}, format="json").json()["id"]
    other = f"/api/v1/sessions/{own}/messages/{answer.id}/continue"
    assert error_of(client_b.post(other, format="json"), 404)["code"] == "not_found"
    assert not ChatJob.objects.filter(continued_message=answer).exists()


@pytest.mark.django_db
def test_it_is_in_the_api_schema(client_a):
    schema = client_a.get("/api/schema/?format=json").json()
    path = "/api/v1/sessions/{session_id}/messages/{message_id}/continue"
    responses = schema["paths"][path]["post"]["responses"]
    assert {"202", "400", "404", "409", "429"} <= set(responses)


# -- with the worker ---------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_worker_writes_more_of_the_answer(celery_worker, client_a):
    session = client_a.post(
        "/api/v1/sessions", {"params": {"max_tokens": 4, "temperature": 0}}, format="json"
    ).json()
    first = client_a.post(
        f"/api/v1/sessions/{session['id']}/messages", {"content": "Hello"}, format="json"
    ).json()
    done = wait_for_job(client_a, first["id"])
    assert done["finish_reason"] == "length", done
    before = done["message"]["content"]
    url = f"/api/v1/sessions/{session['id']}/messages/{done['message']['id']}/continue"
    job = client_a.post(url, format="json").json()
    ended = wait_for_job(client_a, job["id"])
    assert ended["status"] == "succeeded" and ended["usage"]["completion_tokens"] > 0
    row = ChatJob.objects.get(pk=job["id"])
    assert row.output and ended["message"]["content"] == before + row.output
    assert ended["message"]["id"] == done["message"]["id"]
    stored = Message.objects.filter(session_id=session["id"]).order_by("created_at")
    assert [m.content for m in stored] == ["Hello", before + row.output]
    # The prompt was the partial answer continued: longer than the first job's by about it.
    assert ended["usage"]["prompt_tokens"] > done["usage"]["prompt_tokens"]
