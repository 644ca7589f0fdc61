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
from dataclasses import dataclass
from datetime import UTC, datetime

from django.conf import settings
from django.db.models import Sum
from django.utils import timezone

from autoglm_site.errors import ApplicationError
from autoglm_site.redisconn import redis_client

from .models import ApiKey, Limits, Tenant, UsageRecord

logger = logging.getLogger(__name__)

WINDOW_MS = 60_000
UNLIMITED = -1
KEYS_PER_SCOPE = 5


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


# KEYS: per scope [requests log, tokens log, tokens amounts, month counter, leases]
# ARGV: now_ms, job_id, reserve, lease_ttl_ms, month_ttl_s,
#       then per scope: rpm, tpm, monthly, concurrent, month_seed (-1 = unlimited / no seed)
# Returns {1, stats...} when admitted, {0, reason, scope_index, retry_ms, stats...} when not;
# stats per scope: requests used, requests reset ms, tokens used, tokens reset ms.
_ADMIT = """
local now = tonumber(ARGV[1])
local id = ARGV[2]
local reserve = tonumber(ARGV[3])
local lease_ttl = tonumber(ARGV[4])
local month_ttl = tonumber(ARGV[5])
local window = 60000
local nscopes = #KEYS / 5

local function window_stats(req, tok, amt)
  redis.call('ZREMRANGEBYSCORE', req, '-inf', now - window)
  local old = redis.call('ZRANGEBYSCORE', tok, '-inf', now - window)
  if #old > 0 then
    redis.call('ZREMRANGEBYSCORE', tok, '-inf', now - window)
    redis.call('HDEL', amt, unpack(old))
  end
  local requests = redis.call('ZCARD', req)
  local tokens = 0
  for _, v in ipairs(redis.call('HVALS', amt)) do tokens = tokens + tonumber(v) end
  local req_reset, tok_reset = 0, 0
  local first = redis.call('ZRANGE', req, 0, 0, 'WITHSCORES')
  if #first > 0 then req_reset = tonumber(first[2]) + window - now end
  first = redis.call('ZRANGE', tok, 0, 0, 'WITHSCORES')
  if #first > 0 then tok_reset = tonumber(first[2]) + window - now end
  return requests, req_reset, tokens, tok_reset
end

local stats = {}
local denied = nil
for s = 0, nscopes - 1 do
  local k = s * 5
  local a = 6 + s * 5
  local rpm, tpm = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  local monthly, conc, seed = tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4])
  local requests, req_reset, tokens, tok_reset = window_stats(KEYS[k + 1], KEYS[k + 2], KEYS[k + 3])
  redis.call('ZREMRANGEBYSCORE', KEYS[k + 5], '-inf', now)
  if seed >= 0 then redis.call('SET', KEYS[k + 4], seed, 'NX', 'EX', month_ttl) end
  local month_used = tonumber(redis.call('GET', KEYS[k + 4]) or '0')
  table.insert(stats, requests)
  table.insert(stats, req_reset)
  table.insert(stats, tokens)
  table.insert(stats, tok_reset)
  if not denied then
    if monthly >= 0 and month_used + reserve > monthly then
      denied = {'insufficient_quota', s, 0}
    elseif rpm >= 0 and requests + 1 > rpm then
      denied = {'requests', s, req_reset}
    elseif tpm >= 0 and tokens + reserve > tpm then
      if reserve > tpm then denied = {'request_too_large', s, 0}
      else denied = {'tokens', s, tok_reset} end
    elseif conc >= 0 and redis.call('ZCARD', KEYS[k + 5]) >= conc then
      denied = {'concurrency', s, 1000}
    end
  end
end
if denied then
  return {0, denied[1], denied[2], denied[3], unpack(stats)}
end
for s = 0, nscopes - 1 do
  local k = s * 5
  redis.call('ZADD', KEYS[k + 1], now, id)
  redis.call('PEXPIRE', KEYS[k + 1], window)
  redis.call('ZADD', KEYS[k + 2], now, id)
  redis.call('PEXPIRE', KEYS[k + 2], window)
  redis.call('HSET', KEYS[k + 3], id, reserve)
  redis.call('PEXPIRE', KEYS[k + 3], window)
  redis.call('INCRBY', KEYS[k + 4], reserve)
  redis.call('EXPIRE', KEYS[k + 4], month_ttl)
  redis.call('ZADD', KEYS[k + 5], now + lease_ttl, id)
  redis.call('PEXPIRE', KEYS[k + 5], lease_ttl + window)
end
return {1, unpack(stats)}
"""

# KEYS: settled marker, then per scope [tokens amounts, month counter, leases];
# ARGV: job_id, reserved, actual. Releases the job's lease and settles its reservation to its
# real use, once: the marker makes a second call (a redelivered job, a retry) change nothing.
_SETTLE = """
local id, reserved, actual = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local first = redis.call('SET', KEYS[1], '1', 'NX', 'EX', 604800)
for s = 0, (#KEYS - 1) / 3 - 1 do
  local k = 1 + s * 3
  redis.call('ZREM', KEYS[k + 3], id)
  if first then
    if redis.call('HEXISTS', KEYS[k + 1], id) == 1 then
      redis.call('HSET', KEYS[k + 1], id, actual)
    end
    local delta = actual - reserved
    if delta ~= 0 and redis.call('EXISTS', KEYS[k + 2]) == 1 then
      local now_used = redis.call('INCRBY', KEYS[k + 2], delta)
      if now_used < 0 then redis.call('SET', KEYS[k + 2], 0, 'KEEPTTL') end
    end
  end
end
if first then return 1 end
return 0
"""

# KEYS: per scope [tokens amounts, month counter]; ARGV: job_id, extra, then per scope the
# monthly limit (-1 = unlimited). Adds ``extra`` tokens to a job's reservation if every
# month has room for them; all or nothing.
_EXTEND = """
local id, extra = ARGV[1], tonumber(ARGV[2])
for s = 0, #KEYS / 2 - 1 do
  local monthly = tonumber(ARGV[3 + s])
  local used = tonumber(redis.call('GET', KEYS[s * 2 + 2]) or '0')
  if monthly >= 0 and used + extra > monthly then return 0 end
end
for s = 0, #KEYS / 2 - 1 do
  if redis.call('HEXISTS', KEYS[s * 2 + 1], id) == 1 then
    redis.call('HINCRBY', KEYS[s * 2 + 1], id, extra)
  end
  redis.call('INCRBY', KEYS[s * 2 + 2], extra)
end
return 1
"""

# KEYS: leases per scope; ARGV: job_id, expiry_ms. Extends a lease only if it still exists.
_RENEW = """
for _, key in ipairs(KEYS) do
  redis.call('ZADD', key, 'XX', ARGV[2], ARGV[1])
  redis.call('PEXPIRE', key, tonumber(ARGV[2]) - tonumber(ARGV[3]) + 60000)
end
return 1
"""


@dataclass(frozen=True)
class Scope:
    """One set of limits (a tenant's or a key's) and where its counters live in Redis."""

    name: str
    limits: Limits

    def keys(self, month: str) -> list[str]:
        base = f"autoglm:quota:{self.name}"
        return [
            f"{base}:req",
            f"{base}:tok",
            f"{base}:tokamt",
            f"{base}:month:{month}",
            f"{base}:leases",
        ]

    def limit_args(self) -> list[int]:
        limits = self.limits
        return [
            _or_unlimited(limits.requests_per_minute),
            _or_unlimited(limits.tokens_per_minute),
            _or_unlimited(limits.tokens_per_month),
            _or_unlimited(limits.max_concurrent_jobs),
        ]


def _or_unlimited(value: int | None) -> int:
    return UNLIMITED if value is None else int(value)


def scopes_for(tenant: Tenant, api_key: ApiKey | None) -> list[Scope]:
    scopes = [Scope(f"tenant:{tenant.pk}", tenant)]
    if api_key is not None:
        scopes.append(Scope(f"key:{api_key.pk}", api_key))
    return scopes


def _month(now: datetime | None = None) -> str:
    return (now or datetime.now(UTC)).strftime("%Y%m")


def _month_seconds_left(now: datetime) -> int:
    next_month = datetime(now.year + (now.month == 12), now.month % 12 + 1, 1, tzinfo=UTC)
    return max(1, int((next_month - now).total_seconds()))


def _month_used_from_ledger(scope: Scope, now: datetime) -> int:
    """Tokens this month by the ledger: the seed of a month counter Redis does not have."""
    start = datetime(now.year, now.month, 1, tzinfo=UTC)
    rows = UsageRecord.objects.filter(created_at__gte=start)
    if isinstance(scope.limits, Tenant):
        rows = rows.filter(tenant=scope.limits)
    else:
        rows = rows.filter(api_key=scope.limits)
    total = rows.aggregate(p=Sum("prompt_tokens"), c=Sum("completion_tokens"))
    return (total["p"] or 0) + (total["c"] or 0)


@dataclass(frozen=True)
class Headers:
    """OpenAI's x-ratelimit-* headers for the tightest scope of each kind."""

    values: dict[str, str]

    @classmethod
    def build(cls, scopes: list[Scope], stats: list[int], *, reserved: int | None) -> Headers:
        """``reserved``: the tokens of a request admitted after ``stats`` were read."""
        values: dict[str, str] = {}
        for kind, limit_index, offset in (("requests", 0, 0), ("tokens", 1, 2)):
            best = None
            for index, scope in enumerate(scopes):
                limit = scope.limit_args()[limit_index]
                if limit < 0:
                    continue
                used = int(stats[index * 4 + offset])
                if reserved is not None:
                    used += 1 if kind == "requests" else reserved
                reset_ms = int(stats[index * 4 + offset + 1])
                remaining = max(0, limit - used)
                if best is None or remaining < best[1]:
                    best = (limit, remaining, reset_ms)
            if best is not None:
                values[f"x-ratelimit-limit-{kind}"] = str(best[0])
                values[f"x-ratelimit-remaining-{kind}"] = str(best[1])
                values[f"x-ratelimit-reset-{kind}"] = _duration(best[2])
        return cls(values)


def _duration(ms: int) -> str:
    """OpenAI's reset format: ``1s``, ``6m0s``, ``120ms``."""
    if ms <= 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    seconds = math.ceil(ms / 1000)
    minutes, seconds = divmod(seconds, 60)
    return f"{minutes}m{seconds}s" if minutes else f"{seconds}s"


def admit(*, tenant: Tenant, api_key: ApiKey | None, job_id: str, reserve_tokens: int) -> Headers:
    """Admit one generation request or raise; on success it holds a concurrency lease.

    Raises QuotaExceededError when a month's tokens are spent and RateLimitError when over a
    per-minute limit or the concurrency limit. Nothing is recorded for a refused request.
    """
    client = redis_client()
    now = datetime.now(UTC)
    month = _month(now)
    scopes = scopes_for(tenant, api_key)
    keys = [key for scope in scopes for key in scope.keys(month)]
    # Seed month counters that Redis lacks (first use this month, or Redis lost them).
    with client.pipeline(transaction=False) as pipe:
        for scope in scopes:
            pipe.exists(scope.keys(month)[3])
        present = pipe.execute()
    args: list[int | str] = [
        int(time.time() * 1000),
        job_id,
        reserve_tokens,
        settings.AUTOGLM_QUEUED_LEASE_TTL * 1000,
        _month_seconds_left(now) + 86400 * 7,
    ]
    for scope, exists in zip(scopes, present, strict=True):
        seed = UNLIMITED if exists else _month_used_from_ledger(scope, now)
        args.extend([*scope.limit_args(), seed])
    result = client.eval(_ADMIT, len(keys), *keys, *args)
    if int(result[0]) == 1:
        return Headers.build(scopes, result[1:], reserved=reserve_tokens)
    reason, scope_index, retry_ms = result[1], int(result[2]), int(result[3])
    headers = Headers.build(scopes, result[4:], reserved=None).values
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
    scopes = [s for s in scopes_for(tenant, api_key) if any(v >= 0 for v in s.limit_args()[:2])]
    if not scopes:
        return Headers({})
    client = redis_client()
    now_ms = int(time.time() * 1000)
    stats: list[int] = []
    with client.pipeline(transaction=False) as pipe:
        for scope in scopes:
            req, tok, amt = scope.keys(_month())[:3]
            pipe.zcount(req, now_ms - WINDOW_MS + 1, "+inf")
            pipe.zrange(req, 0, 0, withscores=True)
            pipe.zrangebyscore(tok, now_ms - WINDOW_MS + 1, "+inf")
            pipe.hgetall(amt)
            pipe.zrange(tok, 0, 0, withscores=True)
        replies = pipe.execute()
    for index in range(len(scopes)):
        count, first_req, live_ids, amounts, first_tok = replies[index * 5 : index * 5 + 5]
        tokens = sum(int(amounts.get(member, 0)) for member in live_ids)
        req_reset = int(first_req[0][1]) + WINDOW_MS - now_ms if first_req else 0
        tok_reset = int(first_tok[0][1]) + WINDOW_MS - now_ms if first_tok else 0
        stats.extend([count, max(0, req_reset), tokens, max(0, tok_reset)])
    return Headers.build(scopes, stats, reserved=None)


def lease_renew(*, tenant: Tenant, api_key: ApiKey | None, job_id: str) -> None:
    """Keep a running job's concurrency slot for another lease period (the worker calls it)."""
    keys = [scope.keys(_month())[4] for scope in scopes_for(tenant, api_key)]
    now_ms = int(time.time() * 1000)
    expiry = now_ms + settings.AUTOGLM_LEASE_TTL * 1000
    redis_client().eval(_RENEW, len(keys), *keys, job_id, expiry, now_ms)


def extend(*, tenant: Tenant, api_key: ApiKey | None, job_id: str, extra: int) -> bool:
    """Add ``extra`` tokens to a running job's reservation if the months have room.

    The worker calls this when the real prompt is longer than the estimate made at admission,
    so a job never uses more tokens than it holds and a month is never overspent.
    """
    scopes = scopes_for(tenant, api_key)
    month = _month()
    keys = [key for scope in scopes for key in (scope.keys(month)[2], scope.keys(month)[3])]
    monthly = [scope.limit_args()[2] for scope in scopes]
    return bool(redis_client().eval(_EXTEND, len(keys), *keys, job_id, extra, *monthly))


def settle(
    *, tenant: Tenant, api_key: ApiKey | None, job_id: str, reserved: int, actual: int
) -> None:
    """Release a job's lease and settle its token reservation to what it really used."""
    month = _month(timezone.now())
    keys = [f"autoglm:quota:settled:{job_id}"]
    for scope in scopes_for(tenant, api_key):
        scope_keys = scope.keys(month)
        keys.extend([scope_keys[2], scope_keys[3], scope_keys[4]])
    redis_client().eval(_SETTLE, len(keys), *keys, job_id, reserved, actual)
