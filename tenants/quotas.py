"""Rate limits and quotas, enforced atomically in Redis and shared by every web replica.

Two scopes apply to each request: the tenant's limits and, optionally tighter, the key's. One Lua
script checks every limit of both scopes and, only if all pass, records the request, so N
replicas can never overspend and a refused request consumes nothing:

- requests per minute and tokens per minute: exact sliding windows (a log of admissions in a
  sorted set, with each admission's tokens in a hash), not fixed windows that allow double bursts;
- tokens per month: a counter per calendar month (UTC), seeded from the usage ledger when Redis
  has none, so a Redis restart does not hand out a fresh month;
- concurrent jobs: leases with an expiry in a sorted set. Admission takes a lease for a queued
  job; the worker shortens it when it starts and renews it while it generates; every ending
  (success, failure, cancel, disconnect) releases it, and a dead worker's lease simply expires.

Tokens are reserved at admission (estimated prompt + max_tokens) and settled to the real use when
the job ends.

We do not use the ``limits`` library: it checks one limit at a time, and admission must be
all-or-nothing across up to eight limits.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from django.conf import settings
from django.utils import timezone
from opentelemetry import trace

from autoglm_site.errors import ApplicationError
from autoglm_site.redisconn import redis_client

from . import selectors
from .models import ApiKey, Limits, Tenant
from .quota_scripts import ADMIT, EXTEND, PEEK, RENEW, SETTLE, ScopeKeys, Window

logger = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)  # admission's span (a no-op unless tracing is on)

UNLIMITED = -1

# Tokens reserved by the jobs of a scope (tenant=, api_key=) admitted since= and not ended yet;
# tenants cannot see jobs, so the chat layer passes its ``chat.jobs.reserved_in_flight``.
InFlight = Callable[..., int]


class RateLimitError(ApplicationError):
    status_code = 429
    type = "requests"
    code = "rate_limit_exceeded"

    def __init__(
        self, message: str, *, retry_after: float, headers: dict[str, str], kind: str = ""
    ):
        super().__init__(message)
        if kind:
            self.type = kind  # OpenAI says "requests" or "tokens" here
        self.retry_after = max(1, math.ceil(retry_after))
        self.headers = {**headers, "retry-after": str(self.retry_after)}


class QuotaExceededError(RateLimitError):
    type = "insufficient_quota"
    code = "insufficient_quota"


@dataclass(frozen=True)
class Scope:
    """One set of limits: the tenant's (``api_key`` None) or a key's, and its Redis keys."""

    tenant: Tenant
    api_key: ApiKey | None = None

    @property
    def limits(self) -> Limits:
        return self.tenant if self.api_key is None else self.api_key

    @property
    def name(self) -> str:
        return f"tenant:{self.tenant.pk}" if self.api_key is None else f"key:{self.api_key.pk}"

    @property
    def requests_per_minute(self) -> int:
        return _or_unlimited(self.limits.requests_per_minute)

    @property
    def tokens_per_minute(self) -> int:
        return _or_unlimited(self.limits.tokens_per_minute)

    @property
    def tokens_per_month(self) -> int:
        return _or_unlimited(self.limits.tokens_per_month)

    @property
    def max_concurrent_jobs(self) -> int:
        return _or_unlimited(self.limits.max_concurrent_jobs)

    def keys(self, month: str) -> ScopeKeys:
        return ScopeKeys.of(self.name, month)

    def month_seed(self, now: datetime, reserved_in_flight: InFlight) -> int:
        """The value of a month counter Redis does not have: the month's tokens by the ledger,
        plus what this month's jobs still in flight hold."""
        used = selectors.usage_month(tenant=self.tenant, api_key=self.api_key, now=now)
        since = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        return used + reserved_in_flight(tenant=self.tenant, api_key=self.api_key, since=since)


def _or_unlimited(value: int | None) -> int:
    return UNLIMITED if value is None else int(value)


def scopes_for(tenant: Tenant, api_key: ApiKey | None) -> list[Scope]:
    scopes = [Scope(tenant)]
    if api_key is not None:
        scopes.append(Scope(tenant, api_key))
    return scopes


def _keys(scopes: list[Scope], month: str) -> list[ScopeKeys]:
    return [scope.keys(month) for scope in scopes]


def _month(now: datetime | None = None) -> str:
    return (now or datetime.now(UTC)).strftime("%Y%m")


def _month_seconds_left(now: datetime) -> int:
    next_month = datetime(now.year + (now.month == 12), now.month % 12 + 1, 1, tzinfo=UTC)
    return max(1, int((next_month - now).total_seconds()))


@dataclass(frozen=True)
class Headers:
    """OpenAI's x-ratelimit-* headers for the tightest scope of each kind."""

    values: dict[str, str]

    @classmethod
    def build(cls, scopes: list[Scope], windows: list[Window], *, reserved: int | None) -> Headers:
        """``reserved``: the tokens of a request admitted after ``windows`` were read."""
        values: dict[str, str] = {}
        for kind in ("requests", "tokens"):
            best = None
            for scope, window in zip(scopes, windows, strict=True):
                limit, used, reset_ms = _per_minute(kind, scope, window)
                if limit < 0:
                    continue
                if reserved is not None:
                    used += 1 if kind == "requests" else reserved
                remaining = max(0, limit - used)
                if best is None or remaining < best[1]:
                    best = (limit, remaining, reset_ms)
            if best is not None:
                values[f"x-ratelimit-limit-{kind}"] = str(best[0])
                values[f"x-ratelimit-remaining-{kind}"] = str(best[1])
                values[f"x-ratelimit-reset-{kind}"] = _duration(best[2])
        return cls(values)


def _per_minute(kind: str, scope: Scope, window: Window) -> tuple[int, int, int]:
    """A scope's limit, use and reset (ms) of one kind of per-minute limit."""
    if kind == "requests":
        return scope.requests_per_minute, window.requests, window.requests_reset_ms
    return scope.tokens_per_minute, window.tokens, window.tokens_reset_ms


def _duration(ms: int) -> str:
    """OpenAI's reset format: ``1s``, ``6m0s``, ``120ms``."""
    if ms <= 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    seconds = math.ceil(ms / 1000)
    minutes, seconds = divmod(seconds, 60)
    return f"{minutes}m{seconds}s" if minutes else f"{seconds}s"


def _admission_traced(*, tenant: Tenant, job_id: str, reserve_tokens: int) -> None:
    """Name the request on admission's span: the job it would be, and what it reserves."""
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attributes(
            {
                "autoglm.job_id": job_id,
                "autoglm.tenant": tenant.slug,
                "autoglm.reserve_tokens": reserve_tokens,
            }
        )


@tracer.start_as_current_span("autoglm.admission")
def admit(
    *,
    tenant: Tenant,
    api_key: ApiKey | None,
    job_id: str,
    reserve_tokens: int,
    reserved_in_flight: InFlight,
) -> Headers:
    """Admit one generation request or raise; on success it holds a concurrency lease.

    Raises QuotaExceededError when a month's tokens are spent and RateLimitError when over a
    per-minute limit or the concurrency limit. Nothing is recorded for a refused request.

    A month counter Redis lacks (first use this month, or Redis lost its data) is seeded from
    the ledger plus ``reserved_in_flight``: what the jobs admitted this month and not ended yet
    hold, which their settlement will take back off the counter.
    """
    _admission_traced(tenant=tenant, job_id=job_id, reserve_tokens=reserve_tokens)
    client = redis_client()
    now = datetime.now(UTC)
    month = _month(now)
    scopes = scopes_for(tenant, api_key)
    # Seed month counters that Redis lacks (first use this month, or Redis lost them).
    with client.pipeline(transaction=False) as pipe:
        for scope in scopes:
            pipe.exists(scope.keys(month).month)
        present = pipe.execute()
    seeds = [
        UNLIMITED if exists else scope.month_seed(now, reserved_in_flight)
        for scope, exists in zip(scopes, present, strict=True)
    ]
    args: list[int | str] = [
        int(time.time() * 1000),
        job_id,
        reserve_tokens,
        settings.AUTOGLM_QUEUED_LEASE_TTL * 1000,
        _month_seconds_left(now) + 86400 * 7,
        # When the seeds were read, taken after: a job ending about then is left off by its
        # settlement, which can only overcharge it (by its unused reservation), never let the
        # month be overspent.
        int(time.time() * 1000),
    ]
    for scope, seed in zip(scopes, seeds, strict=True):
        args.extend(
            [
                scope.requests_per_minute,
                scope.tokens_per_minute,
                scope.tokens_per_month,
                scope.max_concurrent_jobs,
                seed,
            ]
        )
    admitted, reply, *refusal = ADMIT(_keys(scopes, month), args)
    windows = Window.decode_all(reply)
    if int(admitted) == 1:
        return Headers.build(scopes, windows, reserved=reserve_tokens)
    reason, scope_index, retry_ms = refusal[0], int(refusal[1]), int(refusal[2])
    headers = Headers.build(scopes, windows, reserved=None).values
    who = "your organisation" if scope_index == 0 else "this API key"
    logger.info("request refused", extra={"tenant": tenant.slug, "reason": reason})
    if reason == "insufficient_quota":
        raise QuotaExceededError(
            f"You exceeded the monthly token quota of {who}.",
            retry_after=_month_seconds_left(now),
            headers=headers,
        )
    messages = {
        "requests": f"Rate limit reached for requests per minute of {who}.",
        "tokens": f"Rate limit reached for tokens per minute of {who}.",
        "request_too_large": f"Request too large for the tokens per minute of {who}; "
        "lower max_tokens or shorten the prompt.",
        "concurrency": f"Too many jobs in flight for {who}; wait for one to finish.",
    }
    raise RateLimitError(
        messages[reason],
        retry_after=retry_ms / 1000,
        headers=headers,
        kind="tokens" if reason in ("tokens", "request_too_large") else "requests",
    )


def peek(*, tenant: Tenant, api_key: ApiKey | None) -> Headers:
    """The x-ratelimit-* headers right now, without recording anything."""
    scopes = [
        scope
        for scope in scopes_for(tenant, api_key)
        if scope.requests_per_minute >= 0 or scope.tokens_per_minute >= 0
    ]
    if not scopes:
        return Headers({})
    windows = PEEK(_keys(scopes, _month()), [int(time.time() * 1000)])
    return Headers.build(scopes, Window.decode_all(windows), reserved=None)


def lease_renew(
    *, tenant: Tenant, api_key: ApiKey | None, job_id: str, starting: bool = False
) -> None:
    """Keep a running job's concurrency slot for another lease period (the worker calls it).

    ``starting``: the job is starting, and takes its slot back if its queued lease ran out
    (queued past AUTOGLM_QUEUED_LEASE_TTL); it was admitted, so it is served, and it counts
    against the limit while it runs.
    """
    _lease(tenant, api_key, job_id, settings.AUTOGLM_LEASE_TTL, add=starting)


def lease_hold(*, tenant: Tenant, api_key: ApiKey | None, job_id: str, seconds: int) -> None:
    """Hold an admitted job's concurrency slot for ``seconds``, taking it back if it was lost:
    a job queued again after its worker died, or in flight when Redis lost its data."""
    _lease(tenant, api_key, job_id, seconds, add=True)


def lease_release(*, tenant: Tenant, api_key: ApiKey | None, job_id: str) -> None:
    """Give a job's slot back without settling anything (a hold that came after its end)."""
    client = redis_client()
    for keys in _keys(scopes_for(tenant, api_key), _month()):
        client.zrem(keys.leases, job_id)


def _lease(tenant: Tenant, api_key: ApiKey | None, job_id: str, seconds: int, *, add: bool):
    now_ms = int(time.time() * 1000)
    args = [job_id, now_ms + seconds * 1000, now_ms, 1 if add else 0]
    RENEW(_keys(scopes_for(tenant, api_key), _month()), args)


def extend(*, tenant: Tenant, api_key: ApiKey | None, job_id: str, extra: int) -> bool:
    """Add ``extra`` tokens to a running job's reservation if the months have room.

    The worker calls this when the real prompt is longer than the estimate made at admission,
    so a job never uses more tokens than it holds and a month is never overspent.
    """
    scopes = scopes_for(tenant, api_key)
    monthly = [scope.tokens_per_month for scope in scopes]
    return bool(EXTEND(_keys(scopes, _month()), [job_id, extra, *monthly]))


def settle(
    *,
    tenant: Tenant,
    api_key: ApiKey | None,
    job_id: str,
    reserved: int,
    actual: int,
    admitted_at: datetime | None = None,
    ended_at: datetime | None = None,
) -> None:
    """Release a job's lease and settle its token reservation to what it really used, in the
    month it was admitted in (``admitted_at``; None: now), whose counter holds the reservation.
    ``ended_at`` (None: now): a month counter seeded from the ledger after that already holds
    the job's real use, and is left as it is."""
    month = _month(admitted_at or timezone.now())
    ended_ms = int((ended_at or timezone.now()).timestamp() * 1000)
    SETTLE(
        _keys(scopes_for(tenant, api_key), month),
        # The settlement mark lives as long as the job's other Redis state after its end.
        [job_id, reserved, actual, settings.AUTOGLM_STREAM_TTL, ended_ms],
        lead=(f"autoglm:quota:settled:{job_id}",),
    )
