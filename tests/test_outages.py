"""Redis or PostgreSQL down: requests answer 503 in the error shape with retry-after, fast, and
/readyz says which dependency is down (issue 14, defect 7) while /healthz, which asks none,
stays 200. Both are real: a Redis URL and a
database port where nothing listens."""

import time

import pytest
from django.db import connection

from autoglm_site import redisconn
from devtools.processes import free_port

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def redis_down(settings, monkeypatch):
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    monkeypatch.setattr(redisconn, "_sync_client", None)
    monkeypatch.setattr(redisconn, "_async_clients", {})


def assert_unavailable(response, started: float):
    assert time.monotonic() - started < 1.0
    assert response.status_code == 503, response.content
    assert response.json()["error"]["code"] == "service_unavailable"
    assert int(response["retry-after"]) >= 1


def test_redis_down_answers_503_on_the_native_and_the_openai_api(client_a, redis_down):
    session = client_a.post("/api/v1/sessions", {}, format="json").json()["id"]
    started = time.monotonic()
    response = client_a.post(
        f"/api/v1/sessions/{session}/messages", {"content": "hi"}, format="json"
    )
    assert_unavailable(response, started)
    started = time.monotonic()
    response = client_a.post(
        "/v1/chat/completions",
        {"model": "autoglm-demo", "messages": [{"role": "user", "content": "hi"}]},
        format="json",
    )
    assert_unavailable(response, started)
    ready = client_a.get("/readyz")
    assert ready.status_code == 503 and ready.json()["checks"]["redis"] != "ok"
    assert "redis" in ready.json()["failing"]
    assert client_a.get("/healthz").status_code == 200


def test_postgres_down_answers_503(client_a, monkeypatch):
    connection.close()
    monkeypatch.setitem(connection.settings_dict, "PORT", str(free_port()))
    try:
        started = time.monotonic()
        assert_unavailable(client_a.get("/api/v1/sessions"), started)
        ready = client_a.get("/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["database"] != "ok"
        assert client_a.get("/healthz").status_code == 200
    finally:
        connection.close()
        monkeypatch.undo()


def test_readyz_checks_both_when_they_are_up(client):
    checks = client.get("/readyz").json()["checks"]
    assert checks["database"] == "ok" and checks["redis"] == "ok"


def test_a_jobs_final_write_waits_for_the_database_to_come_back(tenant_a, monkeypatch, settings):
    """Issue 14, defect 1: PostgreSQL down as a job ended left it `running` forever (its
    final write raised, and so did the failure handler's)."""
    import threading

    from chat.jobs import job_start
    from chat.models import ChatJob
    from engine.result import GenerationResult
    from tenants.models import UsageRecord
    from workers import job_runner

    job = ChatJob.objects.create(tenant=tenant_a, model="autoglm-demo", params={"max_tokens": 4})
    job = job_start(job_id=str(job.id), worker="test")
    port = connection.settings_dict["PORT"]
    connection.close()
    monkeypatch.setitem(connection.settings_dict, "PORT", str(free_port()))  # the database goes
    threading.Timer(1.5, lambda: connection.settings_dict.__setitem__("PORT", port)).start()
    result = GenerationResult("Hi!", prompt_tokens=3, completion_tokens=2, finish_reason="stop")
    job_runner._persist(job, result, 0)
    job.refresh_from_db()
    assert job.status == "succeeded" and job.output == "Hi!"
    assert UsageRecord.objects.get(job_id=job.id).completion_tokens == 2
