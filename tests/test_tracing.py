"""Traces and log fields across real processes: a web (uvicorn) and a Celery worker export their
spans over OTLP/HTTP to a receiver in this test, and one trace runs from the web's request
through admission and the task's headers to the worker's queue wait, prefill and decode; every
log line says its service and trace id, with tracing on or off; and no line of theirs or of this
process holds an API key or an Authorization value."""

import base64
import json
import logging
import os
import sys
import time
import uuid

import httpx
import pytest

from devtools.processes import Process, free_port

from .conftest import DEMO_MODEL, WorkerProcess, _test_database_url, wait_for_job
from .otlp_receiver import OtlpReceiver

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]

SERVER, CLIENT, CONSUMER = 2, 3, 5  # opentelemetry.proto.trace.v1.Span.SpanKind
TASK_SPAN = "run/workers.chat_job_run"
JOB_SPANS = {"autoglm.queue_wait", "autoglm.prefill", "autoglm.decode"}
QUEUE_PREFIX = "traced."  # a queue of this module's worker only (the suite's worker has its own)


def untraced_environ() -> dict[str, str]:
    return {name: value for name, value in os.environ.items() if not name.startswith("OTEL_")}


def start_web(env: dict[str, str], log_path, *uvicorn_args: str) -> tuple[Process, str]:
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "autoglm_site.asgi:application"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--lifespan", "on", *uvicorn_args]
    web = Process(command, env=env, log=log_path).start()
    return web, f"http://127.0.0.1:{port}"


def log_lines(path) -> list[dict]:
    """The JSON lines of a process's log (uvicorn's supervisor and Celery's banner are not)."""
    lines = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


class TracedStack:
    def __init__(self, receiver: OtlpReceiver, url: str, web: Process, worker: Process):
        self.receiver, self.url, self.web, self.worker = receiver, url, web, worker


@pytest.fixture(scope="module")
def traced_stack(django_db_setup, django_db_blocker, demo_model_dir, tmp_path_factory):
    """A web and a worker exporting to a receiver here, on a queue of their own; their logs at
    DEBUG (uvicorn's at trace), where more gets logged that could hold a secret."""
    with django_db_blocker.unblock():
        database_url = _test_database_url()
    logs = tmp_path_factory.mktemp("traced")
    with OtlpReceiver() as receiver:
        env = {
            **untraced_environ(),
            "DATABASE_URL": database_url,
            "AUTOGLM_TORCH_THREADS": "1",
            "AUTOGLM_QUEUE_PREFIX": QUEUE_PREFIX,
            "AUTOGLM_LOG_LEVEL": "DEBUG",
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "200",
        }
        web, url = start_web(env, logs / "web.log", "--workers", "1", "--log-level", "trace")
        try:
            worker = WorkerProcess(logs / "worker.log", env).start()
            try:
                web.wait_for_port(int(url.rsplit(":", 1)[1]), 30)
                yield TracedStack(receiver, url, web, worker)
            finally:
                worker.stop()
        finally:
            web.stop()


def complete(url: str, key: str, **headers: str) -> dict:
    response = httpx.post(
        f"{url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}", **headers},
        json={
            "model": DEMO_MODEL,
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 3,
        },
        timeout=60,
    )
    assert response.status_code == 200, response.text
    return response.json()


def job_id_of(completion: dict) -> str:
    return str(uuid.UUID(completion["id"].removeprefix("chatcmpl-")))


def spans_of_job(receiver: OtlpReceiver, job_id: str) -> list:
    """Every span of the job's trace, once the worker's and the web's have all come."""

    def job_trace(spans):
        ids = {s.trace_id for s in spans if s.attributes.get("autoglm.job_id") == job_id}
        return [s for s in spans if s.trace_id in ids]

    def complete_trace(spans) -> bool:
        names = {s.name for s in job_trace(spans)}
        return {"autoglm.admission", TASK_SPAN, *JOB_SPANS} <= names and any(
            s.kind == SERVER for s in job_trace(spans)
        )

    return job_trace(receiver.wait_until(complete_trace))


def ancestors(span, by_id: dict) -> list:
    chain = []
    while span.parent_id in by_id:
        span = by_id[span.parent_id]
        chain.append(span)
    return chain


def test_it_traces_a_job_from_the_web_request_to_the_engine(traced_stack, key_a):
    job_id = job_id_of(complete(traced_stack.url, key_a))

    spans = spans_of_job(traced_stack.receiver, job_id)

    assert len({s.trace_id for s in spans}) == 1
    by_id = {s.span_id: s for s in spans}
    (admission,) = [s for s in spans if s.name == "autoglm.admission"]
    (request,) = [s for s in spans if s.kind == SERVER]
    (task,) = [s for s in spans if s.name == TASK_SPAN]
    assert (request.service, admission.service) == ("autoglm-web", "autoglm-web")
    assert request.attributes["http.route"].endswith("chat/completions")
    assert request in ancestors(admission, by_id)
    # The worker's task continues the trace from the message's headers, under the request.
    assert (task.service, task.kind) == ("autoglm-worker", CONSUMER)
    assert request in ancestors(task, by_id)
    assert task.attributes["autoglm.job_id"] == job_id
    assert task.attributes["gen_ai.request.model"] == DEMO_MODEL
    phases = {s.name: s for s in spans if s.name in JOB_SPANS}
    assert {s.parent_id for s in phases.values()} == {task.span_id}
    wait, prefill, decode = (phases[f"autoglm.{n}"] for n in ("queue_wait", "prefill", "decode"))
    assert admission.end_ns <= wait.start_ns <= wait.end_ns <= prefill.start_ns
    assert prefill.end_ns == decode.start_ns <= decode.end_ns <= task.end_ns
    assert prefill.attributes["gen_ai.usage.input_tokens"] > 0
    assert 1 <= decode.attributes["gen_ai.usage.output_tokens"] <= 3
    assert decode.attributes["gen_ai.response.finish_reasons"] in (["length"], ["stop"])
    # Redis and PostgreSQL calls are spans of the trace, on both sides.
    systems = {(s.service, s.attributes.get("db.system")) for s in spans}
    assert {("autoglm-web", "redis"), ("autoglm-web", "postgresql")} <= systems
    assert {("autoglm-worker", "redis"), ("autoglm-worker", "postgresql")} <= systems
    # Calls outside any work (heartbeats, the sweeper, token writes) make no traces of their own.
    lone_calls = [s for s in traced_stack.receiver.spans if s.kind == CLIENT and not s.parent_id]
    assert lone_calls == []


def test_it_logs_the_trace_id_on_both_sides_when_tracing(traced_stack, key_a):
    job_id = job_id_of(complete(traced_stack.url, key_a, **{"x-request-id": "req-traced-1"}))
    (trace_id,) = {s.trace_id for s in spans_of_job(traced_stack.receiver, job_id)}

    web = [line for line in log_lines(traced_stack.web.log_path) if line.get("job_id") == job_id]
    worker = [
        line for line in log_lines(traced_stack.worker.log_path) if line.get("job_id") == job_id
    ]

    assert any(line["message"] == "job queued" for line in web)
    assert any(line["message"] == "job running" for line in worker)
    for line in web + worker:
        assert line["trace_id"] == trace_id
    assert {line["service"] for line in web} == {"web"}
    assert {line["service"] for line in worker} == {"worker"}
    # The request id the client sent still finds the web's lines.
    assert {line.get("request_id") for line in web} == {"req-traced-1"}


def test_it_exports_a_workers_last_spans_when_it_stops(
    demo_model_dir, client_a, settings, tmp_path
):
    # A batch that would wait ten minutes: only the worker's shutdown can send it.
    settings.AUTOGLM_QUEUE_PREFIX = "traced-flush."
    with OtlpReceiver() as receiver:
        env = {
            **untraced_environ(),
            "DATABASE_URL": _test_database_url(),
            "AUTOGLM_TORCH_THREADS": "1",
            "AUTOGLM_QUEUE_PREFIX": settings.AUTOGLM_QUEUE_PREFIX,
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "600000",
        }
        worker = WorkerProcess(tmp_path / "worker.log", env).start()
        try:
            session = client_a.post("/api/v1/sessions", {}, format="json").json()["id"]
            url = f"/api/v1/sessions/{session}/messages"
            job = client_a.post(url, {"content": "hi", "max_tokens": 2}, format="json").json()
            assert wait_for_job(client_a, job["id"])["status"] == "succeeded"
            assert receiver.spans == []
        finally:
            worker.stop()

        spans = receiver.wait_until(lambda spans: bool(spans), timeout=5)
    names = {s.name for s in spans if s.attributes.get("autoglm.job_id") == job["id"]}
    assert {TASK_SPAN, *JOB_SPANS} <= names


def test_it_logs_service_and_request_id_without_tracing(celery_worker, key_a, tmp_path):
    env = {k: v for k, v in celery_worker.env.items() if not k.startswith("OTEL_")}
    web, url = start_web(env, tmp_path / "web.log")
    try:
        web.wait_for_port(int(url.rsplit(":", 1)[1]), 30)
        job_id = job_id_of(complete(url, key_a, **{"x-request-id": "req-untraced-1"}))
    finally:
        web.stop()

    web_lines = [line for line in log_lines(tmp_path / "web.log") if line.get("job_id") == job_id]
    worker_lines = [
        line for line in log_lines(celery_worker.log_path) if line.get("job_id") == job_id
    ]
    assert any(line["message"] == "job queued" for line in web_lines)
    assert any(line["message"] == "job running" for line in worker_lines)
    assert {(line["service"], line["trace_id"]) for line in web_lines} == {
        ("web", "req-untraced-1")
    }
    assert {(line["service"], line["trace_id"]) for line in worker_lines} == {
        ("worker", "req-untraced-1")
    }


def test_it_keeps_keys_and_authorization_values_out_of_every_log(traced_stack, key_a, caplog):
    caplog.set_level(logging.DEBUG)
    for name in ("httpx", "httpcore"):
        caplog.set_level(logging.DEBUG, logger=name)
    prefix, secret = key_a.split(".", 1)
    wrong_secret = "Zz9" * 10 + "Zz"  # the right shape, for the right prefix
    basic = base64.b64encode(f"alice:{secret}".encode()).decode()
    url = traced_stack.url
    complete(url, key_a)
    body = {"model": DEMO_MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
    body["stream"] = True
    headers = {"Authorization": f"Bearer {key_a}"}
    with httpx.stream(
        "POST", f"{url}/v1/chat/completions", json=body, headers=headers, timeout=60
    ) as stream:
        assert stream.status_code == 200
        assert "data: [DONE]" in list(stream.iter_lines())
    refused = [
        f"Bearer {prefix}.{wrong_secret}",
        f"Bearer {key_a} trailing",  # garbled
        f"Basic {basic}",
        key_a,  # no scheme
        f"Bearer {key_a[:-5]}",  # cut short
    ]
    for authorization in refused:
        response = httpx.get(f"{url}/v1/models", headers={"Authorization": authorization})
        assert response.status_code == 401
    # A client that puts its key in the URL: the access log prints the query string.
    assert httpx.get(f"{url}/v1/models", params={"api_key": key_a}).status_code == 401
    deadline = time.monotonic() + 5
    while traced_stack.web.log_text().count("/v1/models") < len(refused) + 1:
        assert time.monotonic() < deadline, "the web did not log the refused requests"
        time.sleep(0.1)

    logs = {
        "web": traced_stack.web.log_text(),
        "worker": traced_stack.worker.log_text(),
        "test": caplog.text,
    }
    for where, text in logs.items():
        for leaked in (secret, wrong_secret, basic, key_a[:-5]):
            assert leaked not in text, f"{where} log holds a secret"
    assert f"{prefix}.[redacted]" in logs["web"]  # the query string's key, redacted
