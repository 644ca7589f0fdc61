"""Secrets never reach a log line: API keys and ``Authorization`` values are scrubbed from every
record the log handler emits, whichever logger made it (ours, Django's, Celery's, uvicorn's).

A filter on the handler (``LOGGING`` in settings) rewrites the record in place: its message
with its arguments, its extra fields, its traceback and stack, so the formatter and any later
handler only ever see the redacted text.
"""

import logging
import re
from typing import Any

REDACTED = "[redacted]"

# A key as tenants.services makes it, ``sk-<8-character prefix>.<32-character secret>`` (the
# prefix is no secret: the admin shows it, and it tells which key was used).
_API_KEY = re.compile(r"\b(sk-)?([A-Za-z0-9]{8})\.[A-Za-z0-9]{32}\b")
# An Authorization header's value, however it is written out: ``Authorization: Bearer x``,
# ``'HTTP_AUTHORIZATION': 'Bearer x'``, ``(b'authorization', b'Bearer x')``, ``authorization=x``.
_AUTHORIZATION = re.compile(
    r"""(authorization(?:['"]?\s*[:=]|['"]\s*,)\s*b?['"]?)[^'"\r\n]+""", re.IGNORECASE
)
# A webhook signing secret (autoglm_site.webhook_signing: whsec_ and base64).
_WEBHOOK_SECRET = re.compile(r"\bwhsec_[A-Za-z0-9+/=]+")
# A bearer token anywhere else.
_BEARER = re.compile(r"\b(bearer\s+)[^\s'\",;]+", re.IGNORECASE)
# Fields (extra fields, keys of logged mappings) whose whole value is a secret.
_SECRET_NAMES = {"authorization", "http_authorization", "proxy-authorization", "api_key"}

# What every LogRecord has; anything else on a record is an extra field.
_RECORD_FIELDS = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}
# The fields autoglm_site.tracing adds, which hold no secret.
_LOG_FIELDS = {"service", "trace_id", "request_id"}


def redact(text: str) -> str:
    """``text`` with API keys, webhook secrets and Authorization values as ``[redacted]``."""
    text = _AUTHORIZATION.sub(rf"\1{REDACTED}", text)
    text = _BEARER.sub(rf"\1{REDACTED}", text)
    text = _WEBHOOK_SECRET.sub(f"whsec_{REDACTED}", text)
    return _API_KEY.sub(rf"\1\2.{REDACTED}", text)


def redact_value(value: Any, name: str = "") -> Any:
    """A logged value with its secrets redacted: strings scrubbed, mappings and sequences item
    by item, a field named like a secret replaced whole, any other object by its redacted text
    where its text holds a secret (the formatter would print that text)."""
    if name.lower() in _SECRET_NAMES and value:
        return REDACTED
    if isinstance(value, str):
        return redact(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, dict):
        return {key: redact_value(item, str(key)) for key, item in value.items()}
    if type(value) in (list, tuple):
        if len(value) == 2 and isinstance(value[0], str | bytes):
            # A (name, value) pair, as ASGI headers and header lists are.
            return type(value)([value[0], redact_value(value[1], _text(value[0]))])
        return type(value)(redact_value(item) for item in value)
    text = _text(value)
    redacted = redact(text)
    return value if redacted == text else redacted


class RedactSecretsFilter(logging.Filter):
    """Scrubs the record's message, arguments, extra fields, traceback and stack in place."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            _redact_record(record)
        except Exception:
            # A filter that raises would raise in the caller's logging call: keep the line,
            # without anything that could not be checked.
            record.msg, record.args = f"{record.levelname} record not redactable", None
            record.exc_info = record.exc_text = record.stack_info = None
            for name in set(record.__dict__) - _RECORD_FIELDS - _LOG_FIELDS:
                delattr(record, name)
        return True


def _redact_record(record: logging.LogRecord) -> None:
    _redact_message(record)
    for name, value in list(record.__dict__.items()):
        if name not in _RECORD_FIELDS:
            setattr(record, name, redact_value(value, name))
    if record.exc_info:
        # The formatter would print the traceback from exc_info; it prints exc_text instead
        # once exc_info is gone, so the redacted text is all that is left to print.
        record.exc_text = logging.Formatter().formatException(record.exc_info)
        record.exc_info = None
    if record.exc_text:
        record.exc_text = redact(record.exc_text)
    if record.stack_info:
        record.stack_info = redact(record.stack_info)


def _redact_message(record: logging.LogRecord) -> None:
    """The message merged with its arguments, redacted (a mapping, which the JSON formatter
    spreads into fields, stays one)."""
    if isinstance(record.msg, dict) and not record.args:
        record.msg = redact_value(record.msg)
        return
    try:
        message = record.getMessage()
    except Exception:
        # Arguments that do not fit the message: logging would print both as they are.
        message = f"{record.msg} {record.args!r}"
    record.msg, record.args = redact(message), None


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("latin-1")
    try:
        return str(value)
    except Exception:
        return repr(value)
