"""Workers' metrics, carried to the web's ``/metrics`` through Redis.

Each worker process publishes its registry (the ``autoglm_`` families) with every heartbeat,
under a key that lives as long as its heartbeat does; the web reads them all at each scrape and
labels each sample with its worker. So Prometheus scrapes one target whatever the number of
workers, and a worker needs no port of its own (GPU hosts behind NAT, several workers per
host); the price is that a worker's figures are up to one heartbeat old.
"""

from __future__ import annotations

import json

from django.conf import settings
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.metrics_core import Metric

from autoglm_site.redisconn import redis_client

from .worker_registry import WORKERS_KEY

METRICS_KEY = "autoglm:worker-metrics:{}"
PREFIX = "autoglm_"


def publish(*, worker: str, registry: CollectorRegistry = REGISTRY) -> None:
    families = [
        {
            "name": family.name,
            "documentation": family.documentation,
            "type": family.type,
            "unit": family.unit,
            "samples": [[s.name, s.labels, s.value] for s in family.samples],
        }
        for family in registry.collect()
        if family.name.startswith(PREFIX)
    ]
    redis_client().set(
        METRICS_KEY.format(worker), json.dumps(families), ex=settings.AUTOGLM_WORKER_TTL
    )


def withdraw(*, worker: str) -> None:
    redis_client().delete(METRICS_KEY.format(worker))


def worker_families() -> list[Metric]:
    """Every live worker's families, one per name, each sample labelled with its worker."""
    client = redis_client()
    workers = sorted(client.smembers(WORKERS_KEY))
    snapshots = client.mget([METRICS_KEY.format(w) for w in workers]) if workers else []
    merged: dict[str, Metric] = {}
    for worker, snapshot in zip(workers, snapshots, strict=True):
        for family in json.loads(snapshot) if snapshot else []:
            metric = merged.get(family["name"])
            if metric is None:
                metric = Metric(
                    family["name"], family["documentation"], family["type"], family["unit"]
                )
                merged[family["name"]] = metric
            for name, labels, value in family["samples"]:
                metric.add_sample(name, {**labels, "worker": worker}, value)
    return list(merged.values())
