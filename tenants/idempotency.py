"""``Idempotency-Key`` on the POSTs that create things, with Stripe's semantics.

A key is scoped to its caller (the tenant and the API key, or the tenant and the signed-in
user) and kept ``AUTOGLM_IDEMPOTENCY_TTL`` seconds (24 h). Its record in Redis holds a
fingerprint of the request (method, path, JSON body) and, once the first request has created
its thing, that request's answer (or, for a completion, its job id). Then:

- the same key with the same request is answered with the first answer (``Idempotent-Replayed:
  true``), creating nothing;
- the same key with another request is 422 ``idempotency_key_reused``;
- while the first request has not created its thing yet, the same key is 409
  ``idempotency_key_in_flight`` (with ``retry-after``): the record is then a lock, taken with
  ``SET NX`` and a short TTL, so a request that died holding it does not block the key for long.

Only successes are kept: a request that failed (a 4xx or 5xx, or an exception) created nothing,
so its lock is released and the same key may be sent again, as a fresh request.
"""

import hashlib
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography.fernet import Fernet
from django.conf import settings
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse
from rest_framework.response import Response

from autoglm_site.errors import (
    IdempotencyKeyInFlightError,
    IdempotencyKeyReusedError,
    InvalidRequestError,
)
from autoglm_site.redisconn import redis_client
from autoglm_site.schema import ERROR_REF
from autoglm_site.sealing import sealer

from .models import ApiKey, Tenant

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
MAX_KEY_LENGTH = 255
# How long a first request may hold its key before another may take it (it died, most likely).
LOCK_TTL_S = 60
# Headers of the first answer that are replayed with it (its rate-limit state).
KEPT_HEADER_PREFIX = "x-ratelimit-"

# Write the record only while this request still holds its lock (ARGV[1]: its token).
_FINISH = """
local held = redis.call('GET', KEYS[1])
if held and cjson.decode(held)['token'] == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
  return 1
end
return 0
"""
_RELEASE = """
local held = redis.call('GET', KEYS[1])
if held and cjson.decode(held)['token'] == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


@dataclass(frozen=True)
class Claim:
    """This request holds the key: it creates its thing, then finishes or releases the claim."""

    redis_key: str
    fingerprint: str
    token: str
    seal: Fernet  # encrypts the kept answer (it may hold a new API key's secret)


@dataclass(frozen=True)
class Replay:
    """The first answer under this key, to be given again."""

    status: int
    body: Any
    headers: dict[str, str]
    job_id: str | None


IN_FLIGHT = (
    "The first request with this `Idempotency-Key` is still creating its object "
    "(`idempotency_key_in_flight`): retry after `retry-after`."
)


def idempotency_schema(responses: dict) -> dict:
    """``extend_schema`` arguments of a POST that takes an Idempotency-Key: the header, and its
    409 and 422 beside ``responses`` (a 409 of the operation's own stays, and says both)."""
    header = OpenApiParameter(
        HEADER,
        str,
        OpenApiParameter.HEADER,
        pattern=f"^[ -~]{{1,{MAX_KEY_LENGTH}}}$",
        description="Send the same key to retry without creating twice: the first answer is "
        "replayed (`Idempotent-Replayed: true`) for 24 hours.",
    )
    errors = {
        409: OpenApiResponse(ERROR_REF, description=IN_FLIGHT),
        422: OpenApiResponse(
            ERROR_REF,
            description="This `Idempotency-Key` came with another request "
            "(`idempotency_key_reused`).",
        ),
    }
    return {"parameters": [header], "responses": {**errors, **responses}}


def idempotency_key(request) -> str | None:
    """The request's Idempotency-Key, None without one; a malformed one is a 400."""
    key = request.headers.get(HEADER)
    if key is None:
        return None
    if not 1 <= len(key) <= MAX_KEY_LENGTH or not all(" " <= c <= "~" for c in key):
        raise InvalidRequestError(
            f"An {HEADER} is 1 to {MAX_KEY_LENGTH} printable ASCII characters.",
            param=HEADER,
            code="invalid_idempotency_key",
        )
    return key


def caller_scope(tenant: Tenant, api_key, user) -> str:
    """Who the key belongs to: keys of two callers never meet."""
    if isinstance(api_key, ApiKey):
        return f"{tenant.pk}:key:{api_key.pk}"
    return f"{tenant.pk}:user:{user.pk}"


def fingerprint(method: str, path: str, data: Any) -> str:
    """The request as compared between tries: same method, path and JSON body (key order and
    spacing do not count)."""
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{method} {path}\n{canonical}".encode()).hexdigest()


def idempotency_begin(request, *, scope: str, data: Any) -> Claim | Replay | None:
    """Take the request's key, or find its first answer. None: the request has no key.

    Raises 422 for a key used with another request, 409 while the first is still in flight.
    """
    key = idempotency_key(request)
    if key is None:
        return None
    digest = hashlib.sha256(f"{scope}\n{key}".encode()).hexdigest()
    claim = Claim(
        redis_key=f"autoglm:idempotency:{digest}",
        fingerprint=fingerprint(request.method, request.path, data),
        token=secrets.token_hex(16),
        seal=_seal(scope, key),
    )
    client = redis_client()
    lock = json.dumps({"token": claim.token, "fingerprint": claim.fingerprint})
    for _ in range(3):  # a record released between our SET and GET: try to take it again
        if client.set(claim.redis_key, lock, nx=True, ex=LOCK_TTL_S):
            return claim
        held = client.get(claim.redis_key)
        if held is not None:
            return _found(json.loads(held), claim)
    raise IdempotencyKeyInFlightError(f"A request with this {HEADER} is in flight; retry shortly.")


def _found(record: dict, claim: Claim) -> Replay:
    if record["fingerprint"] != claim.fingerprint:
        raise IdempotencyKeyReusedError(
            f"This {HEADER} was used with another request (its body or endpoint differs); "
            "use a new key for a new request.",
            param=HEADER,
        )
    if "answer" not in record:
        raise IdempotencyKeyInFlightError(
            f"The first request with this {HEADER} has not answered yet; retry shortly."
        )
    answer = json.loads(claim.seal.decrypt(record["answer"].encode()))
    return Replay(answer["status"], answer["body"], answer["headers"], answer.get("job_id"))


def idempotency_finish(
    claim: Claim,
    *,
    status: int,
    body: Any = None,
    headers: dict[str, str] | None = None,
    job_id: str | None = None,
) -> None:
    """Keep the answer of the claim's request for the key's lifetime."""
    kept = {k: v for k, v in (headers or {}).items() if k.lower().startswith(KEPT_HEADER_PREFIX)}
    answer = json.dumps(
        {"status": status, "body": body, "headers": kept, "job_id": job_id}, default=str
    )
    record = {
        "token": claim.token,
        "fingerprint": claim.fingerprint,
        "answer": claim.seal.encrypt(answer.encode()).decode(),
    }
    ttl = settings.AUTOGLM_IDEMPOTENCY_TTL
    stored = json.dumps(record, default=str)
    redis_client().eval(_FINISH, 1, claim.redis_key, claim.token, stored, ttl)


def _seal(scope: str, key: str) -> Fernet:
    """The kept answer is encrypted under a key made from SECRET_KEY and the Idempotency-Key
    itself, which Redis never holds (its record is named by a hash): what Redis keeps (a new
    API key's secret, a completion's text) reads only for the client that sent the key."""
    return sealer(f"{scope}\n{key}")


def idempotency_release(claim: Claim) -> None:
    """Give the key up: the request created nothing, so it may be sent again."""
    redis_client().eval(_RELEASE, 1, claim.redis_key, claim.token)


def replayed_response(replay: Replay) -> Response:
    response = Response(replay.body, status=replay.status, headers=replay.headers)
    response[REPLAYED_HEADER] = "true"
    return response


def idempotent(request, *, scope: str, create: Callable[[], Response]) -> Response:
    """``create()``'s answer, once per Idempotency-Key: a DRF view's POST wrapped whole.

    ``request.data`` is the body compared; a success (2xx) is kept and replayed, anything else
    releases the key.
    """
    outcome = idempotency_begin(request, scope=scope, data=request.data)
    if outcome is None:
        return create()
    if isinstance(outcome, Replay):
        return replayed_response(outcome)
    try:
        response = create()
    except BaseException:
        idempotency_release(outcome)
        raise
    if 200 <= response.status_code < 300:
        status, headers = response.status_code, dict(response.headers.items())
        idempotency_finish(outcome, status=status, body=response.data, headers=headers)
    else:
        idempotency_release(outcome)
    return response
