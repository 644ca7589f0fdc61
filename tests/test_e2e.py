"""End to end on real parts: API key -> PostgreSQL -> Redis/Celery -> worker process with the
demo model -> answer stored -> read back through the API."""

import pytest
from transformers import AutoTokenizer

from chat.models import ChatJob

from .conftest import wait_for_job

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]


def post_message(client, session_id: str, content: str, **params) -> dict:
    response = client.post(
        f"/api/v1/sessions/{session_id}/messages", {"content": content, **params}, format="json"
    )
    assert response.status_code == 202, response.content
    return response.json()


def test_it_answers_a_message_through_the_worker(celery_worker, client_a, demo_model_dir):
    session = client_a.post("/api/v1/sessions", {"title": "e2e"}, format="json").json()
    job = post_message(client_a, session["id"], "Hello, who are you?", max_tokens=16, temperature=0)
    assert job["status"] == "queued"

    done = wait_for_job(client_a, job["id"])

    assert done["status"] == "succeeded", done
    answer = done["message"]["content"]
    assert answer.strip()
    assert done["finish_reason"] in ("stop", "length")
    # The answer is text the model's own tokenizer produced: it round-trips through it.
    tokenizer = AutoTokenizer.from_pretrained(demo_model_dir)
    ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
    assert 0 < len(ids) <= 16 + 2
    assert tokenizer.decode(ids) == answer
    row = ChatJob.objects.get(pk=job["id"])
    assert row.prompt_tokens > 0 and 0 < row.completion_tokens <= 16
    assert done["usage"]["total_tokens"] == row.prompt_tokens + row.completion_tokens
    assert row.started_at and row.finished_at and row.attempts == 1
    history = client_a.get(f"/api/v1/sessions/{session['id']}/messages").json()["data"]
    assert [m["role"] for m in history] == ["user", "assistant"]
    assert history[1]["content"] == answer


def test_it_keeps_the_model_resident_across_jobs(celery_worker, client_a):
    session = client_a.post("/api/v1/sessions", {}, format="json").json()
    first = wait_for_job(client_a, post_message(client_a, session["id"], "one", max_tokens=4)["id"])
    second = wait_for_job(
        client_a, post_message(client_a, session["id"], "two", max_tokens=4)["id"]
    )
    assert first["status"] == second["status"] == "succeeded"
    # The worker logs "model loaded" once per load; two jobs (and all earlier ones) loaded once.
    assert celery_worker.log_text().count('"message": "model loaded"') == 1
    # The second answer was generated with the first exchange in its prompt.
    assert second["usage"]["prompt_tokens"] > first["usage"]["prompt_tokens"]


def test_it_fails_a_job_with_a_reason_when_the_prompt_does_not_fit(
    celery_worker, client_a, settings
):
    session = client_a.post("/api/v1/sessions", {}, format="json").json()
    job = post_message(client_a, session["id"], "word " * 2000, max_tokens=8)
    done = wait_for_job(client_a, job["id"])
    assert done["status"] == "failed"
    assert done["error"]["code"] == "context_length_exceeded"
    assert "context window" in done["error"]["message"]
    assert done["message"] is None


def test_it_logs_the_request_id_in_the_worker(celery_worker, client_a):
    session = client_a.post("/api/v1/sessions", {}, format="json").json()
    response = client_a.post(
        f"/api/v1/sessions/{session['id']}/messages",
        {"content": "trace me", "max_tokens": 2},
        format="json",
        HTTP_X_REQUEST_ID="trace-e2e-42",
    )
    wait_for_job(client_a, response.json()["id"])
    assert '"trace_id": "trace-e2e-42"' in celery_worker.log_text()


def test_it_stores_an_answer_in_which_the_model_emitted_nul(celery_worker, client_a):
    # This prompt makes the demo model emit a NUL character (greedy): PostgreSQL cannot store
    # one, so the worker drops it rather than failing the job.
    session = client_a.post("/api/v1/sessions", {}, format="json").json()
    job = post_message(
        client_a, session["id"], "Tell me a long story.", max_tokens=1500, temperature=0
    )
    done = wait_for_job(client_a, job["id"])
    assert done["status"] == "succeeded", done
    assert "\x00" not in done["message"]["content"]
