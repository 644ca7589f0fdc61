"""/readyz (issue 15): 200 while PostgreSQL, Redis and a live worker for each model of
AUTOGLM_READY_MODELS answer; 503 naming the failing check when the worker is stopped or killed,
200 again when it is back. A real worker process on "autoglm-idle", which no other test serves;
/healthz asks nothing and stays 200 throughout."""

import logging
import os
import signal
import time

import pytest

from .conftest import WorkerProcess

pytestmark = [pytest.mark.no_stand_in_worker, pytest.mark.django_db(transaction=True)]


def ready(client) -> tuple[int, dict]:
    response = client.get("/readyz")
    assert client.get("/healthz").status_code == 200
    return response.status_code, response.json()


def wait_for_readiness(client, status: int, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        code, body = ready(client)
        if code == status:
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.2)


def test_readyz_follows_the_model_s_worker(celery_worker, client, settings, tmp_path):
    settings.AUTOGLM_READY_MODELS = ["autoglm-idle"]
    code, body = ready(client)
    assert code == 503
    assert body["failing"] == ["model:autoglm-idle"]
    assert body["checks"]["model:autoglm-idle"] == "down: no live worker"
    assert body["checks"]["database"] == body["checks"]["redis"] == "ok"

    env = celery_worker.env
    worker = WorkerProcess(tmp_path / "a.log", env, model="autoglm-idle").start()
    try:
        body = wait_for_readiness(client, 200, 5)
        assert body == {
            "status": "ok",
            "failing": [],
            "checks": {"database": "ok", "redis": "ok", "model:autoglm-idle": "ok: 1 live"},
        }
        # Killed: its heartbeat runs out (AUTOGLM_WORKER_TTL is 3 s for the test workers).
        os.kill(worker.proc.pid, signal.SIGKILL)
        worker.proc.wait()
        wait_for_readiness(client, 503, 6)
    finally:
        worker.stop()

    worker = WorkerProcess(tmp_path / "b.log", env, model="autoglm-idle").start()
    try:
        wait_for_readiness(client, 200, 5)
    finally:
        worker.stop()
    # Stopped cleanly, it says so at once.
    assert ready(client)[0] == 503


def test_probes_and_scrapes_stay_out_of_the_access_log(caplog):
    access = logging.getLogger("uvicorn.access")
    line = '%s - "%s %s HTTP/%s" %d'
    with caplog.at_level(logging.INFO):
        for path in ("/healthz", "/readyz", "/metrics", "/readyz?verbose=1", "/v1/models"):
            access.info(line, "127.0.0.1:5000", "GET", path, "1.1", 200)
    logged = [record.getMessage() for record in caplog.records if record.name == "uvicorn.access"]
    assert len(logged) == 1 and "/v1/models" in logged[0]
