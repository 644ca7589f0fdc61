"""OpenTelemetry traces of one process, web or worker: on only where the standard ``OTEL_*``
variables ask for an exporter, configured here in code (no ``opentelemetry-instrument``).

A request's trace runs from Django's server span (admission among its children) through the
task's message headers to the worker's Celery span, under which the worker adds the job's
queue wait, prefill and decode (``workers.job_spans``); Redis and PostgreSQL calls are spans of
whatever is current. With tracing off, nothing is installed: the API's default tracer makes
every span of ours a no-op.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from .env import ConfigError
from .tracing import service_set

logger = logging.getLogger(__name__)

# The exporters ``OTEL_TRACES_EXPORTER`` may name here: OTLP over HTTP, and the console one to
# look at spans while debugging.
EXPORTERS = ("otlp", "console")
# What Django's instrumentation leaves out by default (matched anywhere in the URL).
PROBE_URLS = r"/healthz\b,/readyz\b,/metrics\b"
_provider: list = []  # this process's TracerProvider, once configured


def tracing_wanted(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the standard variables ask for traces: an exporter named (other than "none"), or
    an OTLP endpoint given; ``OTEL_SDK_DISABLED=true`` turns them off whatever else is set."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = _exporter_names(environ)
    if exporters:
        return exporters != ["none"]
    return bool(
        environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def configure_tracing(service: str, environ: Mapping[str, str] = os.environ) -> bool:
    """Name this process's service in its logs and, where the environment asks for traces,
    install the tracer provider, its exporters and the instrumentations; True when tracing is
    on. Call once per process, before it serves: the web before Django loads its middleware,
    the worker before Celery starts."""
    service_set(service)
    if _provider or not tracing_wanted(environ):
        return bool(_provider)
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    name = environ.get("OTEL_SERVICE_NAME") or f"autoglm-{service}"
    provider = TracerProvider(
        resource=Resource.create({"service.name": name}), sampler=_sampler(environ)
    )
    for processor in _span_processors(environ):
        provider.add_span_processor(processor)
    trace.set_tracer_provider(provider)
    _provider.append(provider)
    _instrument(service)
    logger.info("tracing on", extra={"otel_service_name": name})
    return True


def tracing_shutdown() -> None:
    """Export the spans still buffered and stop the exporters (the worker's shutdown calls it;
    the provider also does at interpreter exit)."""
    for provider in _provider:
        provider.shutdown()


def _sampler(environ: Mapping[str, str]):
    """``OTEL_TRACES_SAMPLER``'s where set (None: the provider reads it); else every trace that
    starts with work (a request, a task), and none of the lone Redis or PostgreSQL calls that
    happen outside any (the worker's heartbeat and sweeper, the engine thread's token writes),
    which would each make a trace of one span."""
    if environ.get("OTEL_TRACES_SAMPLER"):
        return None
    from opentelemetry.sdk.trace.sampling import ParentBased

    return ParentBased(root=_WorkSampler())


class _WorkSampler:
    """Samples a root span unless it is a client call (Redis, PostgreSQL) with no work above it."""

    def should_sample(self, parent_context, trace_id, name, kind=None, attributes=None, **rest):
        from opentelemetry.sdk.trace.sampling import ALWAYS_ON, Decision, SamplingResult
        from opentelemetry.trace import SpanKind

        if kind == SpanKind.CLIENT:
            return SamplingResult(Decision.DROP)
        return ALWAYS_ON.should_sample(parent_context, trace_id, name, kind, attributes, **rest)

    def get_description(self) -> str:
        return "WorkSampler"


def _exporter_names(environ: Mapping[str, str]) -> list[str]:
    raw = environ.get("OTEL_TRACES_EXPORTER", "")
    return [name.strip().lower() for name in raw.split(",") if name.strip()]


def _span_processors(environ: Mapping[str, str]) -> list:
    """One batching processor per exporter; each reads its own ``OTEL_*`` settings (endpoint,
    headers, timeout, ``OTEL_BSP_*``)."""
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    names = _exporter_names(environ) or ["otlp"]
    unknown = [name for name in names if name not in EXPORTERS]
    if unknown:
        raise ConfigError(f"OTEL_TRACES_EXPORTER may name {', '.join(EXPORTERS)}, got {unknown}")
    processors = []
    if "otlp" in names:
        processors.append(BatchSpanProcessor(_otlp_exporter(environ)))
    if "console" in names:
        processors.append(BatchSpanProcessor(ConsoleSpanExporter()))
    return processors


def _otlp_exporter(environ: Mapping[str, str]):
    protocol = environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
    )
    if protocol != "http/protobuf":
        raise ConfigError(
            f"OTEL_EXPORTER_OTLP_PROTOCOL: only http/protobuf is supported here, got {protocol!r}"
        )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


def _instrument(service: str) -> None:
    """The official instrumentations: Django (the server span of each request, WSGI or ASGI),
    Celery on the worker (its task span, continuing the trace from the message headers), redis
    and psycopg everywhere."""
    from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    RedisInstrumentor().instrument()
    PsycopgInstrumentor().instrument(enable_commenter=False)
    if service == "worker":
        _instrument_worker()
    else:
        _instrument_web()


def _instrument_web() -> None:
    from celery.signals import before_task_publish
    from opentelemetry.instrumentation.django import DjangoInstrumentor

    # Probes and scrapes would make a trace each, every few seconds: left out unless the
    # standard variable says which URLs to leave out.
    DjangoInstrumentor().instrument(
        excluded_urls=os.environ.get("OTEL_PYTHON_DJANGO_EXCLUDED_URLS", PROBE_URLS)
    )
    # Not Celery's instrumentation here: the web sends the job's task by name (it never imports
    # the workers), and for a task it does not know, the instrumentation's publish span is
    # never ended and its context never detached. Carrying the context is all the web needs.
    before_task_publish.connect(_carry_trace_context, weak=False)


def _instrument_worker() -> None:
    from celery.signals import worker_shutdown
    from opentelemetry.instrumentation.celery import CeleryInstrumentor

    CeleryInstrumentor().instrument()
    worker_shutdown.connect(lambda **kwargs: tracing_shutdown(), weak=False)


def _carry_trace_context(headers: dict | None = None, **kwargs) -> None:
    """Put the current trace context (W3C ``traceparent``) in the task message's headers, where
    the worker's Celery instrumentation picks it up."""
    from opentelemetry.propagate import inject

    if headers is not None:
        inject(headers)
