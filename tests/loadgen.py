"""Parallel HTTP load from several processes, for the quota tests. Imports no Django, so it can
run in spawned processes; bounded in count and time, loopback only."""

from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from multiprocessing import get_context

import httpx


def _burst(urls: list[str], key: str, body: dict) -> list[tuple[int, dict, dict]]:
    def one(url):
        response = httpx.post(
            url, json=body, headers={"Authorization": f"Bearer {key}"}, timeout=60
        )
        return response.status_code, response.json(), dict(response.headers)

    with ThreadPoolExecutor(len(urls)) as pool:
        return list(pool.map(one, urls))


def post_in_parallel(
    urls: list[str], key: str, body: dict, *, processes: int = 4
) -> list[tuple[int, dict, dict]]:
    """POST ``body`` to each of ``urls`` at once, spread over ``processes``; (status, json,
    headers) each. One URL a request: a session takes one message at a time."""
    shares = [urls[i::processes] for i in range(processes)]
    with ProcessPoolExecutor(processes, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(_burst, share, key, body) for share in shares if share]
        return [result for future in futures for result in future.result()]
