"""What every log line says about where it comes from: the process's service (web, worker or
manage) and the trace id, the OpenTelemetry trace's where tracing is on, else the request's
``x-request-id``, carried web to worker in the job (``ChatJob.trace_id``)."""

import contextvars
import logging
import re
import uuid

from opentelemetry import trace

trace_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("trace_id", default="")

_VALID_TRACE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_service = ["manage"]  # a manage.py command's, until the web or the worker says otherwise


def new_trace_id(incoming: str | None = None) -> str:
    """Keep a caller's well-formed request id so logs join up across services; else mint one."""
    if incoming and _VALID_TRACE_ID.match(incoming):
        return incoming
    return f"req_{uuid.uuid4().hex}"


def service_set(service: str) -> None:
    """Name this process's service in its log lines (``autoglm_site.telemetry`` does, at start)."""
    _service[0] = service


def current_trace_id() -> str:
    """The OpenTelemetry trace id (32 hex digits) of the span now current, where tracing is on
    and records it; else the request id of the request or job being served ("" outside any)."""
    span = trace.get_current_span()
    if span.is_recording():
        return trace.format_trace_id(span.get_span_context().trace_id)
    return trace_id_var.get()


class TraceIdFilter(logging.Filter):
    """Adds ``service`` and ``trace_id`` to every record; with tracing on, ``request_id`` too,
    so a line still joins up with the ``x-request-id`` a client saw."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.service = _service[0]
        if not getattr(record, "trace_id", None):
            record.trace_id = current_trace_id()
            request_id = trace_id_var.get()
            if request_id and request_id != record.trace_id:
                record.request_id = request_id
        return True


class ProbeAccessFilter(logging.Filter):
    """Drop uvicorn's access-log lines of /healthz, /readyz and /metrics (its record's args are
    client, method, path, HTTP version, status)."""

    PATHS = ("/healthz", "/readyz", "/metrics")

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            return args[2].split("?", 1)[0] not in self.PATHS
        return True
