"""A worker that cannot serve a configured model says so at start and does not take its jobs; a
request for that model is answered 503 model_unavailable, and nothing is stored."""

import json
import shutil
import sys
import time

import pytest

from chat.jobs import model_queue
from chat.model_status import model_refusal, model_served
from chat.models import ChatJob
from devtools.processes import Process

from .conftest import DEMO_MODEL, wait_for_job

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]

REFUSED = "not-a-causal-lm"


@pytest.fixture
def unservable_model(demo_model_dir, tmp_path):
    """A checkpoint directory whose model is an encoder-decoder (T5), not a causal LM."""
    path = tmp_path / "t5"
    shutil.copytree(demo_model_dir, path)
    config = {"model_type": "t5", "architectures": ["T5ForConditionalGeneration"]}
    config.update(d_model=32, d_kv=16, d_ff=64, num_layers=1, num_heads=2, vocab_size=512)
    (path / "config.json").write_text(json.dumps(config))
    yield path
    model_served(model=REFUSED)  # other tests' processes share this Redis


def worker(celery_worker, settings, tmp_path, models: dict, serve: list[str]) -> Process:
    """A worker on this test's own queues, serving ``serve`` out of ``models``."""
    settings.AUTOGLM_QUEUE_PREFIX = "refusal."
    settings.AUTOGLM_MODELS = {**settings.AUTOGLM_MODELS, **models}
    env = {
        **celery_worker.env,
        "AUTOGLM_QUEUE_PREFIX": "refusal.",
        "AUTOGLM_MODELS": ",".join(f"{name}={path}" for name, path in models.items()),
    }
    command = [sys.executable, "manage.py", "worker", "--models", ",".join(serve)]
    command += ["--concurrency", "2", "--hostname", f"refusal-{time.monotonic_ns()}@%h"]
    return Process(command, env=env, log=tmp_path / "worker.log", stop_timeout=20)


def test_it_refuses_an_unservable_model_at_start_and_serves_the_others(
    celery_worker, client_a, settings, tmp_path, demo_model_dir, unservable_model
):
    models = {DEMO_MODEL: demo_model_dir, REFUSED: unservable_model}
    proc = worker(celery_worker, settings, tmp_path, models, [DEMO_MODEL, REFUSED]).start()
    try:
        proc.wait_for_line(" ready.", 60)
        log = proc.log_text()
        assert f"cannot serve model '{REFUSED}'" in log
        # Celery's start-up banner lists the queues it consumes: not the refused model's.
        queues = log[log.index("[queues]") : log.index("[tasks]")]
        assert model_queue(DEMO_MODEL) in queues and model_queue(REFUSED) not in queues
        assert model_refusal(model=REFUSED) == (
            f"model '{REFUSED}' cannot be served: it uses an encoder-decoder architecture (t5), "
            "which the batching engine does not reproduce exactly"
        )

        response = client_a.post(
            "/v1/chat/completions",
            {"model": REFUSED, "messages": [{"role": "user", "content": "Hi"}]},
            format="json",
        )
        assert response.status_code == 503, response.content
        error = response.json()["error"]
        assert error["code"] == "model_unavailable" and "encoder-decoder" in error["message"]
        assert not ChatJob.objects.filter(model=REFUSED).exists()

        # The worker still answers for the model it can serve.
        session = client_a.post("/api/v1/sessions", {"model": DEMO_MODEL}, format="json").json()
        job = client_a.post(
            f"/api/v1/sessions/{session['id']}/messages",
            {"content": "Hello", "max_tokens": 4},
            format="json",
        ).json()
        assert wait_for_job(client_a, job["id"], timeout=60)["status"] == "succeeded"
    finally:
        proc.stop()


def test_a_worker_that_can_serve_none_of_its_models_exits(
    celery_worker, settings, tmp_path, unservable_model
):
    proc = worker(celery_worker, settings, tmp_path, {REFUSED: unservable_model}, [REFUSED])
    proc.start()
    try:
        assert proc.proc.wait(60) != 0
    finally:
        proc.stop()
    assert "none of its models can be served" in proc.log_text()
