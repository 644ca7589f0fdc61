"""No API key or Authorization value reaches a log line: the handler that LOGGING configures
scrubs every record it emits, whichever logger made it. (The live processes' logs are checked
in tests/test_tracing.py, against the requests made there.)"""

import io
import json
import logging

import pytest

from autoglm_site.redaction import REDACTED, redact

KEY = "sk-AbCd1234.0123456789abcdefghijklmnopqrstuv"
SECRET = KEY.split(".", 1)[1]


@pytest.mark.parametrize(
    "text",
    [
        f"Authorization: Bearer {KEY}",
        f"{{'HTTP_AUTHORIZATION': 'Bearer {KEY}', 'HTTP_HOST': 'x'}}",
        f"[(b'host', b'x'), (b'authorization', b'Bearer {KEY}')]",
        f'{{"authorization": "Bearer {KEY}"}}',
        f"authorization=Bearer%20{KEY}&next=1",
        f"the key {KEY} was refused",
        f"token Bearer {SECRET}",
    ],
)
def test_it_redacts_keys_and_authorization_values_however_written(text):
    redacted = redact(text)

    assert SECRET not in redacted
    assert REDACTED in redacted


def test_it_redacts_webhook_secrets():
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw+/="
    assert redact(f"endpoint made with {secret}.") == f"endpoint made with whsec_{REDACTED}."


def test_it_keeps_what_holds_no_secret():
    for text in ["job queued", "GET /v1/models 200", "Authorization header missing", "v1.2.3"]:
        assert redact(text) == text
    # A key's prefix tells which key it was, and is no secret (the admin shows it).
    assert redact(f"key {KEY}") == f"key sk-AbCd1234.{REDACTED}"


@pytest.fixture
def console():
    """What the handler LOGGING configures writes, captured."""
    (handler,) = [h for h in logging.getLogger().handlers if h.name == "console"]
    stream = io.StringIO()
    previous = handler.setStream(stream)
    try:
        yield stream
    finally:
        handler.setStream(previous)


def emitted(console: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in console.getvalue().splitlines()]


def test_it_redacts_message_args_extra_fields_and_tracebacks_through_the_log_handler(console):
    logger = logging.getLogger("chat.api")
    logger.warning("presented %s", KEY)
    logger.warning(f"header Authorization: Bearer {KEY}")
    logger.warning("request", extra={"authorization": f"Bearer {KEY}", "headers": {"x": KEY}})
    try:
        raise ValueError(f"bad key {KEY}")
    except ValueError:
        logger.exception("failed")
    logging.getLogger("django.request").warning({"event": "refused", "key": KEY})

    text = console.getvalue()
    assert SECRET not in text
    lines = emitted(console)
    assert len(lines) == 5
    assert lines[0]["message"] == f"presented sk-AbCd1234.{REDACTED}"
    assert lines[2]["authorization"] == REDACTED
    assert lines[2]["headers"] == {"x": f"sk-AbCd1234.{REDACTED}"}
    assert "ValueError: bad key" in lines[3]["exc_info"]
    assert lines[4]["event"] == "refused"  # a logged mapping stays fields of the line


def test_it_redacts_third_party_loggers_at_every_level(console):
    logging.getLogger("uvicorn.error").error(
        "scope headers: [(b'authorization', b'Bearer %s')]", KEY
    )
    logging.getLogger("celery.worker").critical("x-api-key %s", KEY)

    assert SECRET not in console.getvalue()
    assert len(emitted(console)) == 2


def test_it_still_logs_a_record_it_cannot_read(console):
    class Unprintable:
        def __str__(self):
            raise RuntimeError("no text")

        __repr__ = __str__

    logging.getLogger("chat.api").warning("odd %s", KEY, extra={"thing": Unprintable()})

    (line,) = emitted(console)
    assert SECRET not in json.dumps(line)
    assert line["level"] == "WARNING"
