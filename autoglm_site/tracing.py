"""The trace id (the request's ``x-request-id``) carried through logs, web to worker."""

import contextvars
import logging
import re
import uuid

trace_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("trace_id", default="")

_VALID_TRACE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def new_trace_id(incoming: str | None = None) -> str:
    """Keep a caller's well-formed request id so logs join up across services; else mint one."""
    if incoming and _VALID_TRACE_ID.match(incoming):
        return incoming
    return f"req_{uuid.uuid4().hex}"


class TraceIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "trace_id", None):
            record.trace_id = trace_id_var.get()
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
