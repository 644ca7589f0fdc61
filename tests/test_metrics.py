"""GET /metrics (issue 15): after a few chats every series shows, with sensible values; the
web processes of one server add up; the workers' series come through Redis; it is not public.
Real parts: the demo model's Celery worker process, Redis, uvicorn with two processes."""

import json
import re
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tenants.models import Tenant

from .conftest import DEMO_MODEL

DASHBOARD = Path(__file__).resolve().parent.parent / "deploy" / "grafana" / "autoglm-dashboard.json"
COMPLETION = {
    "model": DEMO_MODEL,
    "max_tokens": 4,
    "temperature": 0,
    # Long enough for whole prefix-cache blocks: the second and third send find the first's.
    "messages": [{"role": "user", "content": "Hello there. " * 12}],
}


def parse(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [
        (sample.name, sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


def total(samples, name: str, **labels) -> float:
    """The sum of ``name``'s samples whose labels include ``labels`` (over workers, processes)."""
    return sum(
        value
        for sample, sample_labels, value in samples
        if sample == name and labels.items() <= sample_labels.items()
    )


def names(samples) -> set[str]:
    return {sample for sample, _, _ in samples}


def scrape(client) -> list:
    response = client.get("/metrics")
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain")
    return parse(response.content.decode())


def settled(client) -> list:
    """A scrape once the worker is idle and its counters hold still over two heartbeats.
    An earlier test's job can still be ending: the prefix cache counts its prompt when it is
    admitted, the prompt-token counter when it ends, so a baseline taken in between is off."""
    deadline = time.monotonic() + 20
    last = None
    while True:
        samples = scrape(client)
        busy = total(samples, "autoglm_num_requests_running", model=DEMO_MODEL) + total(
            samples, "autoglm_num_requests_waiting", model=DEMO_MODEL
        )
        counters = (
            total(samples, "autoglm_prompt_tokens_total", model=DEMO_MODEL),
            total(samples, "autoglm_prefix_cache_queries_total", model=DEMO_MODEL),
        )
        if busy == 0 and counters == last:
            return samples
        assert time.monotonic() < deadline, "the worker did not settle"
        last = counters
        time.sleep(1.2)


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_a_few_chats_show_every_series(celery_worker, client_a, tenant_a):
    before = settled(client_a)
    for _ in range(3):
        response = client_a.post("/v1/chat/completions", COMPLETION, format="json")
        assert response.status_code == 200, response.content
    Tenant.objects.filter(pk=tenant_a.pk).update(requests_per_minute=3)
    refused = client_a.post("/v1/chat/completions", COMPLETION, format="json")
    assert refused.status_code == 429

    # The worker publishes its figures with each heartbeat (every second in the tests). A job is
    # counted finished as its row is written, a moment before it leaves the running gauge: a
    # heartbeat in between shows both, so wait for the gauge too.
    deadline = time.monotonic() + 10
    while True:
        after = scrape(client_a)
        ended = total(after, "autoglm_request_finished_total", model=DEMO_MODEL)
        running = total(after, "autoglm_num_requests_running", model=DEMO_MODEL)
        if ended - total(before, "autoglm_request_finished_total", model=DEMO_MODEL) >= 3:
            if running == 0:
                break
        assert time.monotonic() < deadline, "the worker's metrics did not come through"
        time.sleep(0.3)

    def grew(name: str, **labels) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    model = {"model": DEMO_MODEL}
    tenant = {"model": DEMO_MODEL, "tenant": "tenant-a"}
    assert grew("autoglm_prompt_tokens_total", **tenant) > 0
    assert grew("autoglm_generation_tokens_total", **tenant) >= 3
    queried = grew("autoglm_prefix_cache_queries_total", **model)
    assert queried == grew("autoglm_prompt_tokens_total", **tenant)
    assert 0 < grew("autoglm_prefix_cache_hits_total", **model) < queried
    assert "autoglm_prefix_cache_evictions_total" in names(after)
    for histogram in (
        "autoglm_time_to_first_token_seconds",
        "autoglm_request_queue_time_seconds",
        "autoglm_e2e_request_latency_seconds",
    ):
        assert grew(f"{histogram}_count", **model) >= 3, histogram
        assert grew(f"{histogram}_sum", **model) > 0, histogram
    assert grew("autoglm_time_per_output_token_seconds_count", **model) >= 1
    # Time to first token comes before the end; both within the test's few seconds.
    ttft = grew("autoglm_time_to_first_token_seconds_sum", **model)
    assert ttft < grew("autoglm_e2e_request_latency_seconds_sum", **model) < 60
    assert grew("autoglm_admission_seconds_count", **model) >= 3
    assert (
        grew("autoglm_requests_rejected_total", code="rate_limit_exceeded", tenant="tenant-a") == 1
    )
    chat = {"route": "v1/chat/completions", "method": "POST"}
    assert grew("autoglm_http_requests_total", status="200", **chat) >= 3
    assert grew("autoglm_http_requests_total", status="429", **chat) == 1
    assert grew("autoglm_http_request_duration_seconds_count", **chat) >= 4

    # The gauges: the worker's (labelled with it) and the ones read at the scrape.
    worker_running = [labels for name, labels, _ in after if name == "autoglm_num_requests_running"]
    assert worker_running and all("worker" in labels for labels in worker_running)
    assert total(after, "autoglm_num_requests_running", **model) == 0  # all ended
    assert total(after, "autoglm_engine_batch_capacity", **model) >= 1
    assert "autoglm_engine_batch_size" in names(after)
    usage = [v for n, labels, v in after if n == "autoglm_kv_cache_usage_ratio"]
    assert usage and all(0 <= value <= 1 for value in usage)
    # Every resident model has a series; the one that served these chats holds blocks.
    prefix_usage = [v for n, labels, v in after if n == "autoglm_prefix_cache_usage_ratio"]
    assert prefix_usage and all(0 <= value <= 1 for value in prefix_usage)
    assert total(after, "autoglm_prefix_cache_usage_ratio", **model) > 0
    assert total(after, "autoglm_live_workers", **model) >= 1
    assert total(after, "autoglm_num_requests_waiting", **model) >= 0
    assert "autoglm_num_requests_waiting" in names(after)
    assert total(after, "autoglm_max_queue_depth", **model) >= 4

    # The Grafana dashboard asks for nothing the scrape lacks.
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    asked = {name for expr in exprs for name in re.findall(r"autoglm_[a-z0-9_]+", expr)}
    assert len(asked) >= 14
    assert asked <= names(after), asked - names(after)


@pytest.mark.django_db(transaction=True)
def test_the_web_processes_of_one_server_add_up(live_server_url, key_a):
    """uvicorn runs two processes here: whichever answers a scrape counts both's requests.
    Each request is a connection of its own, so the two processes share them."""
    headers = {"Authorization": f"Bearer {key_a}"}
    route = {"route": "v1/models", "method": "GET", "status": "200"}

    def counted() -> float:
        scraped = httpx.get(f"{live_server_url}/metrics", timeout=30).text
        return total(parse(scraped), "autoglm_http_requests_total", **route)

    before = counted()
    for _ in range(12):
        response = httpx.get(f"{live_server_url}/v1/models", headers=headers, timeout=30)
        assert response.status_code == 200
    assert [counted() - before for _ in range(6)] == [12] * 6


def test_metrics_are_not_public(client, settings):
    assert client.get("/metrics").status_code == 200  # the test client is on loopback
    elsewhere = client.get("/metrics", REMOTE_ADDR="10.1.2.3")
    assert elsewhere.status_code == 403
    assert elsewhere.json()["error"]["code"] == "permission_denied"

    settings.AUTOGLM_METRICS_TOKEN = "scrape-token-1234"
    assert client.get("/metrics").status_code == 401
    wrong = client.get("/metrics", HTTP_AUTHORIZATION="Bearer nope")
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
    right = client.get(
        "/metrics", HTTP_AUTHORIZATION="Bearer scrape-token-1234", REMOTE_ADDR="10.1.2.3"
    )
    assert right.status_code == 200
