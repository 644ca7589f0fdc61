"""The soak's gauges: worker memory and file descriptors, database connections, Redis keys."""

from __future__ import annotations

import os
import re
from collections import Counter

from django.db import connection

from autoglm_site.redisconn import redis_client


def worker_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def fd_kinds(pid: int, services: dict[int, str]) -> Counter[str]:
    """What a process's descriptors point at: files by path, TCP sockets by the service at
    their remote port (``services``: port -> name), so a leak names itself: a Redis
    connection, a database one, a log file."""
    remote = {}
    for table in ("tcp", "tcp6"):
        with open(f"/proc/{pid}/net/{table}") as lines:
            for line in list(lines)[1:]:
                fields = line.split()
                port = int(fields[2].rsplit(":", 1)[1], 16)
                remote[fields[9]] = f"tcp to {services.get(port, f'port {port}')}"
    kinds: Counter[str] = Counter()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue  # closed while we looked
        inode = re.fullmatch(r"socket:\[(\d+)\]", target)
        kinds[remote.get(inode[1], "socket") if inode else re.sub(r":\[\d+\]", "", target)] += 1
    return kinds


def database_connections() -> int:
    """Connections to the database, this process's own one left out."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()"
        )
        return cursor.fetchone()[0]


def redis_keys() -> tuple[int, int]:
    """All keys, and the keys without an expiry (those are what could pile up forever)."""
    client = redis_client()
    keys = list(client.scan_iter(count=1000))
    with client.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.ttl(key)
        ttls = pipe.execute()
    return len(keys), sum(1 for ttl in ttls if ttl == -1)


def snapshot(worker_pids: list[int]) -> dict[str, float]:
    keys, persistent = redis_keys()
    return {
        "worker RSS (MB)": round(sum(worker_rss_mb(pid) for pid in worker_pids), 1),
        "worker fds": sum(open_fds(pid) for pid in worker_pids),
        "db connections": database_connections(),
        "redis keys": keys,
        "redis keys w/o TTL": persistent,
    }
