"""Redis's side of tenants.quotas: where each scope's counters live, the Lua scripts that read
and change them atomically, and the names of what the scripts return.

Each script is registered once per process (redis-py's ``register_script``: EVALSHA, and the
source is loaded again if Redis has forgotten it). A script's KEYS are, per scope, the
``ScopeKeys`` fields its ``scope_keys`` names, in that order, after any ``lead`` keys.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.commands.core import Script

from autoglm_site.redisconn import redis_client


@dataclass(frozen=True)
class ScopeKeys:
    """Where one scope's counters live in Redis (in a month, for the month counter)."""

    requests: str  # sorted set: job id scored by when it was admitted (ms)
    tokens: str  # sorted set: the same log, for the tokens window
    token_amounts: str  # hash: job id -> the tokens it holds in the window
    month: str  # counter: the tokens of the calendar month
    month_seeded: str  # when the month counter was last seeded from the ledger (ms)
    leases: str  # sorted set: job id scored by when its concurrency lease expires (ms)

    @classmethod
    def of(cls, scope: str, month: str) -> ScopeKeys:
        base = f"autoglm:quota:{scope}"
        return cls(
            requests=f"{base}:req",
            tokens=f"{base}:tok",
            token_amounts=f"{base}:tokamt",
            month=f"{base}:month:{month}",
            month_seeded=f"{base}:month:{month}:seeded",
            leases=f"{base}:leases",
        )


@dataclass(frozen=True)
class Window:
    """One scope's sliding window as a script saw it: what was admitted in the last minute, and
    in how many ms the oldest admission of each log leaves it (0 when there is none).

    The fields are in the order ``window_stats`` returns them.
    """

    requests: int
    requests_reset_ms: int
    tokens: int
    tokens_reset_ms: int

    @classmethod
    def decode_all(cls, reply: list) -> list[Window]:
        """A script's list of window_stats, one per scope, as Windows."""
        return [cls(*(int(value) for value in window)) for window in reply]


# The sliding window, in one place. A log's live entries are those scored (admitted) within
# the last minute; ``window_stats`` reads them without writing, ``window_trim`` drops the rest.
# window_stats returns {requests, requests_reset_ms, tokens, tokens_reset_ms}: Window's fields.
_WINDOW = """
local window = 60000

local function reset_ms(now, log)
  local first = redis.call('ZRANGE', log, 0, 0, 'WITHSCORES')
  if #first == 0 then return 0 end
  return math.max(0, tonumber(first[2]) + window - now)
end

local function window_stats(now, req, tok, amt)
  local live = '(' .. (now - window)
  local requests = redis.call('ZCOUNT', req, live, '+inf')
  local tokens = 0
  local ids = redis.call('ZRANGEBYSCORE', tok, live, '+inf')
  for i = 1, #ids, 1000 do  -- in slices: unpack() has a stack limit
    local amounts = redis.call('HMGET', amt, unpack(ids, i, math.min(i + 999, #ids)))
    for _, v in ipairs(amounts) do tokens = tokens + (tonumber(v) or 0) end
  end
  return {requests, reset_ms(now, req), tokens, reset_ms(now, tok)}
end

local function window_trim(now, req, tok, amt)
  redis.call('ZREMRANGEBYSCORE', req, '-inf', now - window)
  local old = redis.call('ZRANGEBYSCORE', tok, '-inf', now - window)
  if #old > 0 then
    redis.call('ZREMRANGEBYSCORE', tok, '-inf', now - window)
    for i = 1, #old, 1000 do  -- in slices, as above
      redis.call('HDEL', amt, unpack(old, i, math.min(i + 999, #old)))
    end
  end
end
"""

# ARGV: now_ms, job_id, reserve, lease_ttl_ms, month_ttl_s, seed_read_ms (when the seeds were
#       read from the ledger), then per scope: rpm, tpm, monthly, concurrent, month_seed (-1 =
#       unlimited / no seed)
# Returns {1, windows} when admitted, {0, windows, reason, scope_index, retry_ms} when not;
# windows: one window_stats per scope, read before this request.
_ADMIT = (
    _WINDOW
    + """
local now = tonumber(ARGV[1])
local id = ARGV[2]
local reserve = tonumber(ARGV[3])
local lease_ttl = tonumber(ARGV[4])
local month_ttl = tonumber(ARGV[5])
local seed_read = ARGV[6]
local nscopes = #KEYS / 6

local windows = {}
local denied = nil
for s = 0, nscopes - 1 do
  local k = s * 6
  local req, tok, amt, month, seeded, leases = unpack(KEYS, k + 1, k + 6)
  local a = 7 + s * 5
  local rpm, tpm = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  local monthly, conc, seed = tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4])
  window_trim(now, req, tok, amt)
  local stats = window_stats(now, req, tok, amt)
  local requests, req_reset, tokens, tok_reset = stats[1], stats[2], stats[3], stats[4]
  redis.call('ZREMRANGEBYSCORE', leases, '-inf', now)
  if seed >= 0 and redis.call('SET', month, seed, 'NX', 'EX', month_ttl) then
    redis.call('SET', seeded, seed_read, 'EX', month_ttl)
  end
  local month_used = tonumber(redis.call('GET', month) or '0')
  table.insert(windows, stats)
  if not denied then
    if monthly >= 0 and month_used + reserve > monthly then
      denied = {'insufficient_quota', s, 0}
    elseif rpm >= 0 and requests + 1 > rpm then
      denied = {'requests', s, req_reset}
    elseif tpm >= 0 and tokens + reserve > tpm then
      if reserve > tpm then denied = {'request_too_large', s, 0}
      else denied = {'tokens', s, tok_reset} end
    elseif conc >= 0 and redis.call('ZCARD', leases) >= conc then
      denied = {'concurrency', s, 1000}
    end
  end
end
if denied then
  return {0, windows, denied[1], denied[2], denied[3]}
end
for s = 0, nscopes - 1 do
  local k = s * 6
  local req, tok, amt, month, seeded, leases = unpack(KEYS, k + 1, k + 6)
  redis.call('ZADD', req, now, id)
  redis.call('PEXPIRE', req, window)
  redis.call('ZADD', tok, now, id)
  redis.call('PEXPIRE', tok, window)
  redis.call('HSET', amt, id, reserve)
  redis.call('PEXPIRE', amt, window)
  redis.call('INCRBY', month, reserve)
  redis.call('EXPIRE', month, month_ttl)
  redis.call('ZADD', leases, now + lease_ttl, id)
  redis.call('PEXPIRE', leases, lease_ttl + window)
end
return {1, windows}
"""
)

# ARGV: now_ms. Returns one window_stats per scope; records nothing.
_PEEK = (
    _WINDOW
    + """
local now = tonumber(ARGV[1])
local windows = {}
for s = 0, #KEYS / 3 - 1 do
  local req, tok, amt = unpack(KEYS, s * 3 + 1, s * 3 + 3)
  table.insert(windows, window_stats(now, req, tok, amt))
end
return windows
"""
)

# KEYS: the job's settled marker (the lead key), then per scope. ARGV: job_id, reserved, actual,
# the marker's TTL, when the job ended (ms). Releases the job's lease and settles its
# reservation to its real use, once: the marker makes a second call (a retried final write,
# say) change nothing. A month seeded from the ledger after the job ended holds its real use
# already (the ledger has its row), so its counter is left alone.
_SETTLE = """
local id, reserved, actual = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local ended = tonumber(ARGV[5])
local first = redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[4])
for s = 0, (#KEYS - 1) / 4 - 1 do
  local k = 1 + s * 4
  local amt, month, seeded, leases = unpack(KEYS, k + 1, k + 4)
  local seeded_at = tonumber(redis.call('GET', seeded) or '0')
  redis.call('ZREM', leases, id)
  if first then
    if redis.call('HEXISTS', amt, id) == 1 then
      redis.call('HSET', amt, id, actual)
    end
    local delta = actual - reserved
    if delta ~= 0 and seeded_at < ended and redis.call('EXISTS', month) == 1 then
      local now_used = redis.call('INCRBY', month, delta)
      if now_used < 0 then redis.call('SET', month, 0, 'KEEPTTL') end
    end
  end
end
if first then return 1 end
return 0
"""

# ARGV: job_id, extra, then per scope the monthly limit (-1 = unlimited). Adds ``extra``
# tokens to a job's reservation if every month has room for them; all or nothing. A month
# counter Redis lost is left for the next admission to seed (from the ledger and the jobs in
# flight, this one's grown reservation included), never restarted here from 0.
_EXTEND = """
local id, extra = ARGV[1], tonumber(ARGV[2])
for s = 0, #KEYS / 2 - 1 do
  local monthly = tonumber(ARGV[3 + s])
  local used = tonumber(redis.call('GET', KEYS[s * 2 + 2]) or '0')
  if monthly >= 0 and used + extra > monthly then return 0 end
end
for s = 0, #KEYS / 2 - 1 do
  local amt, month = KEYS[s * 2 + 1], KEYS[s * 2 + 2]
  if redis.call('HEXISTS', amt, id) == 1 then
    redis.call('HINCRBY', amt, id, extra)
  end
  if redis.call('EXISTS', month) == 1 then redis.call('INCRBY', month, extra) end
end
return 1
"""

# ARGV: job_id, expiry_ms, now_ms, claim. Extends a lease only if it still exists, or with
# claim = 1 (a job starting) adds it back if it ran out while the job was queued. The set's own
# TTL only ever grows: it must outlive every lease in it, queued ones (longer) included.
_RENEW = """
for _, key in ipairs(KEYS) do
  if ARGV[4] == '1' then
    redis.call('ZADD', key, ARGV[2], ARGV[1])
  else
    redis.call('ZADD', key, 'XX', ARGV[2], ARGV[1])
  end
  local want = tonumber(ARGV[2]) - tonumber(ARGV[3]) + 60000
  local ttl = redis.call('PTTL', key)
  if ttl >= 0 and ttl < want then redis.call('PEXPIRE', key, want) end
end
return 1
"""


class QuotaScript:
    """A Lua script and the keys it takes per scope; registered with Redis on first use."""

    def __init__(self, source: str, *, scope_keys: tuple[str, ...]):
        self.source = source
        self.scope_keys = scope_keys
        self._script: Script | None = None

    def __call__(self, scopes: list[ScopeKeys], args: list[int | str], *, lead: tuple = ()):
        keys = [*lead, *(getattr(keys, name) for keys in scopes for name in self.scope_keys)]
        client = redis_client()
        if self._script is None:
            self._script = client.register_script(self.source)
        return self._script(keys=keys, args=args, client=client)


# KEYS per scope: requests log, tokens log, token amounts, month counter, leases.
ADMIT = QuotaScript(
    _ADMIT,
    scope_keys=("requests", "tokens", "token_amounts", "month", "month_seeded", "leases"),
)
PEEK = QuotaScript(_PEEK, scope_keys=("requests", "tokens", "token_amounts"))
SETTLE = QuotaScript(_SETTLE, scope_keys=("token_amounts", "month", "month_seeded", "leases"))
EXTEND = QuotaScript(_EXTEND, scope_keys=("token_amounts", "month"))
RENEW = QuotaScript(_RENEW, scope_keys=("leases",))
