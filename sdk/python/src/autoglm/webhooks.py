"""Verify the webhooks autoglm sends (Standard Webhooks, as OpenAI's are signed).

>>> event = autoglm.verify_webhook(request.body, request.headers, "whsec_...")

Raises :class:`WebhookVerificationError` unless one of the ``webhook-signature`` values is the
HMAC-SHA256 of ``"{webhook-id}.{webhook-timestamp}.{body}"`` under the secret and the timestamp
is within ``tolerance`` seconds of now (a replayed old delivery is refused); returns the body's
JSON. Verify the raw body, before any JSON parsing re-encodes it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

from ._exceptions import AutoGLMError

__all__ = ["WebhookVerificationError", "verify_webhook"]

SECRET_PREFIX = "whsec_"
DEFAULT_TOLERANCE_S = 300


class WebhookVerificationError(AutoGLMError):
    """The webhook's signature or timestamp does not check out: do not act on it."""


def verify_webhook(
    payload: bytes | str,
    headers: Mapping[str, str],
    secret: str,
    *,
    tolerance: float = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> Any:
    body = payload.encode() if isinstance(payload, str) else payload
    lowered = {name.lower(): value for name, value in headers.items()}
    try:
        message_id = lowered["webhook-id"]
        timestamp = int(lowered["webhook-timestamp"])
        signatures = lowered["webhook-signature"].split()
    except (KeyError, ValueError) as exc:
        raise WebhookVerificationError(f"missing or malformed webhook header: {exc}") from exc
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise WebhookVerificationError("the webhook's timestamp is too old or too new")
    try:
        key = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except ValueError as exc:
        raise WebhookVerificationError("the secret is not a whsec_ base64 secret") from exc
    signed = f"{message_id}.{timestamp}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    for candidate in signatures:
        version, _, value = candidate.partition(",")
        if version == "v1" and hmac.compare_digest(value, expected):
            return json.loads(body)
    raise WebhookVerificationError("no webhook-signature matches")
