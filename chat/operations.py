"""The operator's endpoints: ``GET /readyz`` (can this deployment answer a chat now?) and
``GET /metrics`` (Prometheus). ``/healthz`` (is the process alive?) is autoglm_site's."""

from __future__ import annotations

import hmac
import ipaddress
import os

from django.conf import settings
from django.db import connection
from django.http import HttpResponse, JsonResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

from autoglm_site import plugins
from autoglm_site.errors import OUTAGES, error_body
from autoglm_site.redisconn import redis_client

from .capacity import max_queue_depth, queue_depth
from .worker_metrics import worker_families
from .worker_registry import live_workers, workers_serving


def readyz(request) -> JsonResponse:
    """200 when PostgreSQL and Redis answer, every model of AUTOGLM_READY_MODELS has a live
    worker and every required plugin runs; else 503, naming the checks that fail. No model is
    called."""
    checks = {"database": _check(_database_ping), "redis": _check(_redis_ping)}
    workers = _live_workers_or_none()
    for model in settings.AUTOGLM_READY_MODELS:
        if workers is None:
            checks[f"model:{model}"] = "unknown: Redis is down"
        else:
            count = len(workers_serving(model, workers))
            checks[f"model:{model}"] = f"ok: {count} live" if count else "down: no live worker"
    for entry in plugins.host().plugins:
        if entry.required:
            checks[f"plugin:{entry.name}"] = (
                "ok: running" if entry.state == plugins.State.RUNNING else f"down: {entry.state}"
            )
    failing = [name for name, state in checks.items() if not state.startswith("ok")]
    body = {"status": "unavailable" if failing else "ok", "failing": failing, "checks": checks}
    return JsonResponse(body, status=503 if failing else 200)


def _check(ping) -> str:
    try:
        ping()
    except OUTAGES as exc:
        return f"down: {type(exc).__name__}"
    return "ok"


def _database_ping() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def _redis_ping() -> None:
    redis_client().ping()


def _live_workers_or_none():
    try:
        return live_workers()
    except OUTAGES:
        return None


def metrics(request) -> HttpResponse:
    """Every process's metrics in the Prometheus text format: this web server's processes
    (added up), the live workers' (labelled ``worker``), and the gauges read now."""
    refusal = _metrics_refusal(request)
    if refusal is not None:
        return refusal
    families = _merged([*_web_families(), *worker_families(), *_scrape_time_families()])
    return HttpResponse(generate_latest(_Families(families)), content_type=CONTENT_TYPE_LATEST)


def _metrics_refusal(request) -> JsonResponse | None:
    """``/metrics`` is not public: with AUTOGLM_METRICS_TOKEN it takes that bearer token, and
    without one it answers only clients on this host (a Prometheus beside it, or curl)."""
    token = settings.AUTOGLM_METRICS_TOKEN
    if token:
        given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if hmac.compare_digest(given.encode(), token.encode()):
            return None
        body = error_body(
            "Metrics need the bearer token of AUTOGLM_METRICS_TOKEN.",
            type="invalid_request_error",
            code="invalid_api_key",
        )
        return JsonResponse(body, status=401, headers={"WWW-Authenticate": "Bearer"})
    if _is_loopback(request.META.get("REMOTE_ADDR", "")):
        return None
    body = error_body(
        "Metrics answer clients on this host only; set AUTOGLM_METRICS_TOKEN to scrape them "
        "from elsewhere.",
        type="permission_error",
        code="permission_denied",
    )
    return JsonResponse(body, status=403)


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def _web_families() -> list[Metric]:
    if not _multiprocess():
        return [f for f in REGISTRY.collect() if f.name.startswith("autoglm_")]
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    return list(registry.collect())


def _multiprocess() -> bool:
    # prometheus_client chose its multiprocess values by this variable when first imported
    # (autoglm_site/asgi.py sets it before).
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


def _scrape_time_families() -> list[Metric]:
    waiting = GaugeMetricFamily(
        "autoglm_num_requests_waiting",
        "Jobs in the model's queue that no worker thread has taken yet.",
        labels=["model"],
    )
    bound = GaugeMetricFamily(
        "autoglm_max_queue_depth",
        "The queue depth past which admission answers 503 server_overloaded.",
        labels=["model"],
    )
    live = GaugeMetricFamily(
        "autoglm_live_workers", "Workers beating now that serve the model.", labels=["model"]
    )
    workers = live_workers()
    for model in settings.AUTOGLM_MODELS:
        waiting.add_metric([model], queue_depth(model))
        bound.add_metric([model], max_queue_depth(model, workers))
        live.add_metric([model], len(workers_serving(model, workers)))
    return [waiting, bound, live]


def _merged(families: list[Metric]) -> list[Metric]:
    """One family per name (the web's and the workers' samples of a metric together)."""
    merged: dict[str, Metric] = {}
    for family in families:
        into = merged.setdefault(
            family.name,
            Metric(family.name, family.documentation, family.type, family.unit),
        )
        into.samples.extend(family.samples)
    return list(merged.values())


class _Families:
    """What ``generate_latest`` reads: anything with ``collect()``."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self):
        return iter(self.families)
