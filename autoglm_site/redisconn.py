"""Redis clients for the app's own data (job event streams, quotas); Celery has its own."""

import asyncio

import redis
import redis.asyncio as aioredis
from django.conf import settings

# A Redis that does not answer (a host gone, not just a refused port) must fail a request fast
# (503), not hang it.
CONNECT_TIMEOUT_S = 1.0

_sync_client: redis.Redis | None = None
_async_clients: dict[int, aioredis.Redis] = {}


def redis_client() -> redis.Redis:
    """The process's Redis client (thread-safe; it pools connections)."""
    global _sync_client
    if _sync_client is None:
        _sync_client = redis.Redis.from_url(
            settings.REDIS_URL, decode_responses=True, socket_connect_timeout=CONNECT_TIMEOUT_S
        )
    return _sync_client


def async_redis_client() -> aioredis.Redis:
    """An asyncio Redis client for the running event loop (connections are bound to a loop)."""
    loop_id = id(asyncio.get_running_loop())
    client = _async_clients.get(loop_id)
    if client is None:
        # Event relays wait in XREAD BLOCK for up to the keep-alive interval; redis-py's default
        # socket timeout (5 s since redis-py 8) would cut a stream whose job is quiet longer.
        client = aioredis.Redis.from_url(
            settings.REDIS_URL,
            decode_responses=True,
            socket_connect_timeout=CONNECT_TIMEOUT_S,
            socket_timeout=settings.AUTOGLM_SSE_KEEPALIVE_MS / 1000 + 10,
        )
        _async_clients[loop_id] = client
    return client
