"""Parallel HTTP load from several processes, for the quota tests. Imports no Django, so it can
run in spawned processes; bounded in count and time, loopback only."""

from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from multiprocessing import get_context

import httpx


def _burst(url: str, key: str, body: dict, count: int) -> list[tuple[int, dict, dict]]:
    def one(_):
        response = httpx.post(
            url, json=body, headers={"Authorization": f"Bearer {key}"}, timeout=60
        )
        return response.status_code, response.json(), dict(response.headers)

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(one, range(count)))


def post_in_parallel(
    url: str, key: str, body: dict, *, processes: int = 4, per_process: int = 25
) -> list[tuple[int, dict, dict]]:
    """POST ``body`` processes x per_process times at once; (status, json, headers) each."""
    with ProcessPoolExecutor(processes, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(_burst, url, key, body, per_process) for _ in range(processes)]
        return [result for future in futures for result in future.result()]
