"""Automatic prefix caching (engine/prefix_cache.py): the pool on its own, then in the engine,
where greedy output with the cache must equal output without it, token for token."""

from __future__ import annotations

import dataclasses
import time

import pytest
import torch

from bench.baselines import generate
from engine.engine import BatchingEngine
from engine.kv_cache import SlotKVCache
from engine.prefix_cache import PrefixCache
from engine.registry import LoadedModel

from .helpers import chat, request

BLOCK = 4


def slot_cache(rows: int = 2, length: int = 64) -> SlotKVCache:
    kv = SlotKVCache(
        num_layers=2,
        kv_heads=2,
        head_dim=3,
        dtype=torch.float32,
        device=torch.device("cpu"),
        max_rows=rows,
        max_length=length,
    )
    kv.ensure(rows, length, live_rows=0, length_limit=length)
    return kv


def fill_row(kv: SlotKVCache, row: int, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    for buf in (*kv.keys, *kv.values):
        buf[row] = torch.randn(buf[row].shape, generator=generator)


def row_kv(kv: SlotKVCache, row: int, length: int) -> list[torch.Tensor]:
    return [buf[row, :, :length].clone() for buf in (*kv.keys, *kv.values)]


def pool(kv: SlotKVCache, blocks: int) -> PrefixCache:
    return PrefixCache(kv, max_bytes=blocks * BLOCK * kv.bytes_per_token, block_tokens=BLOCK)


def stored(tokens: list[int], salt: str) -> PrefixCache:
    """A roomy pool holding ``tokens``' blocks, computed in row 0 of a fresh KV cache."""
    kv = slot_cache()
    cache = pool(kv, blocks=16)
    fill_row(kv, 0, seed=1)
    cache.store(0, tokens, salt=salt)
    return cache


def test_a_stored_prefix_loads_back_into_another_row() -> None:
    kv = slot_cache()
    cache = pool(kv, blocks=16)
    tokens = list(range(100, 114))  # 3 full blocks and 2 tokens
    fill_row(kv, 0, seed=1)
    cache.store(0, tokens, salt="t1")

    slots = cache.lookup([*tokens, 7, 8], salt="t1", limit=16)
    cache.load(1, slots)

    assert len(slots) == 3
    assert all(torch.equal(a, b) for a, b in zip(row_kv(kv, 1, 12), row_kv(kv, 0, 12), strict=True))
    assert (cache.query_tokens, cache.hit_tokens) == (16, 12)


def test_a_lookup_stops_at_the_first_block_that_differs_and_at_its_limit() -> None:
    tokens = list(range(16))
    cache = stored(tokens, salt="t1")

    changed = [*tokens[:5], 99, *tokens[6:]]  # differs in the second block

    assert len(cache.lookup(changed, salt="t1", limit=16)) == 1
    assert len(cache.lookup(tokens, salt="t1", limit=15)) == 3  # the 4th block would be whole
    assert len(cache.lookup(tokens[:3], salt="t1", limit=3)) == 0


def test_another_salt_finds_nothing() -> None:
    tokens = list(range(16))
    cache = stored(tokens, salt="tenant-a")

    assert cache.lookup(tokens, salt="tenant-b", limit=16) == []
    assert len(cache.lookup(tokens, salt="tenant-a", limit=16)) == 4


def test_it_evicts_least_recently_used_blocks_children_first_within_its_budget() -> None:
    kv = slot_cache()
    cache = pool(kv, blocks=4)
    first, second = list(range(8)), list(range(50, 58))
    fill_row(kv, 0, seed=1)
    cache.store(0, first, salt="")  # blocks A1, A2
    fill_row(kv, 1, seed=2)
    cache.store(1, second, salt="")  # blocks B1, B2: the pool is full
    cache.lookup(first, salt="", limit=8)  # A is used again: B is now the older prefix

    fill_row(kv, 0, seed=3)
    cache.store(0, list(range(90, 94)), salt="")  # one new block: B's last one goes

    assert cache.evictions == 1
    assert cache.cached_blocks == 4
    assert cache.nbytes <= 4 * cache.block_bytes
    assert len(cache.lookup(first, salt="", limit=8)) == 2
    assert len(cache.lookup(second, salt="", limit=8)) == 1  # its first block is still there


def test_a_prefix_longer_than_the_pool_keeps_what_fits() -> None:
    kv = slot_cache()
    cache = pool(kv, blocks=2)
    tokens = list(range(16))
    fill_row(kv, 0, seed=1)

    cache.store(0, tokens, salt="")

    assert cache.cached_blocks == 2
    assert len(cache.lookup(tokens, salt="", limit=16)) == 2
    assert cache.evictions == 0  # its own first blocks were not evicted for its later ones


def test_a_zero_budget_turns_it_off() -> None:
    kv = slot_cache()
    cache = PrefixCache(kv, max_bytes=0, block_tokens=BLOCK)
    fill_row(kv, 0, seed=1)

    cache.store(0, list(range(16)), salt="")

    assert not cache.enabled
    assert cache.lookup(list(range(16)), salt="", limit=16) == []
    assert cache.nbytes == 0


# In the engine, on the tiny model.

SYSTEMS = [
    {"role": "system", "content": "You answer questions about " + "things " * 60},
    {"role": "system", "content": "You answer questions about " + "places " * 60},
]


def run_conversations(submit, turns: int = 3) -> list:
    """Two conversations, a turn of each in turn, each re-sending its history (the replies
    are the engine's own): their blocks compete for the cache."""
    histories: list[list[dict]] = [[system] for system in SYSTEMS]
    results = []
    for number in range(turns):
        for history in histories:
            history.append({"role": "user", "content": f"Question {number}: tell me more."})
            result = submit(history)
            results.append(result)
            history.append({"role": "assistant", "content": result.text})
    return results


def without_usage(result):
    return dataclasses.replace(result, cached_tokens=0)


@pytest.mark.parametrize(
    ("prefill_tokens", "cache_blocks"),
    [(512, 1024), (12, 1024), (40, 12)],
    ids=["whole-prefills", "chunked-prefills", "chunked-with-evictions"],
)
def test_greedy_output_with_the_cache_equals_output_without_it(
    tiny_loaded: LoadedModel, prefill_tokens: int, cache_blocks: int
) -> None:
    def baseline(history):
        return generate(tiny_loaded, history, max_tokens=12, temperature=0)

    expected = run_conversations(baseline)
    engine = BatchingEngine(
        tiny_loaded,
        max_batch_size=4,
        max_batch_tokens=max(prefill_tokens, 8),
        max_prefill_tokens=prefill_tokens,
        prefix_cache_bytes=cache_blocks * 32 * engine_bytes_per_token(tiny_loaded),
    )
    with engine:
        results = run_conversations(
            lambda history: engine.submit(request(tiny_loaded, history, max_tokens=12)).result(
                timeout=60
            ),
        )
        stats = engine.stats

    assert [without_usage(r) for r in results] == expected
    assert results[0].cached_tokens == results[1].cached_tokens == 0
    assert all(r.cached_tokens % 32 == 0 and r.cached_tokens < r.prompt_tokens for r in results)
    assert stats.prefix_cache_hits == sum(r.cached_tokens for r in results) > 0
    assert stats.prefix_cache_queries == sum(r.prompt_tokens for r in results)
    if cache_blocks < 20:
        assert stats.prefix_cache_evictions > 0
        assert stats.prefix_cache_bytes <= cache_blocks * 32 * engine_bytes_per_token(tiny_loaded)
    else:  # every later turn finds its whole history so far, in whole blocks
        assert all(r.cached_tokens >= 64 for r in results[2:])


def engine_bytes_per_token(loaded: LoadedModel) -> int:
    config = loaded.model.config
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    return config.num_hidden_layers * 2 * kv_heads * head_dim * 4  # float32


def test_concurrent_jobs_share_a_prefix_already_prefilled(tiny_loaded: LoadedModel) -> None:
    first = chat("word " * 80)
    later = [
        [*first[:-1], {"role": "user", "content": "word " * 80 + f"and {i}"}] for i in range(3)
    ]
    expected = [generate(tiny_loaded, m, max_tokens=6, temperature=0) for m in later]
    with BatchingEngine(tiny_loaded, max_batch_size=4) as engine:
        running = engine.submit(request(tiny_loaded, first, max_tokens=40))
        while running.first_token_at is None:  # its prompt is in the cache from here on
            time.sleep(0.01)
        results = [engine.submit(request(tiny_loaded, m, max_tokens=6)).result(60) for m in later]
        running.result(timeout=60)

    assert [without_usage(r) for r in results] == expected
    assert all(r.cached_tokens >= 64 for r in results)


def test_one_tenants_prefix_is_never_another_tenants(tiny_loaded: LoadedModel) -> None:
    messages = chat("word " * 80)
    with BatchingEngine(tiny_loaded) as engine:

        def ask(salt: str):
            job = request(tiny_loaded, messages, max_tokens=4, cache_salt=salt)
            return engine.submit(job).result(timeout=60)

        first_a, first_b, again_a = ask("tenant-a"), ask("tenant-b"), ask("tenant-a")

    assert first_a.cached_tokens == first_b.cached_tokens == 0
    assert again_a.cached_tokens > 0


def test_it_refuses_a_salt_that_is_not_a_string(tiny_loaded: LoadedModel) -> None:
    from engine.errors import InvalidGenerationRequest

    with BatchingEngine(tiny_loaded) as engine, pytest.raises(InvalidGenerationRequest):
        engine.submit(request(tiny_loaded, chat("hi"), max_tokens=2, cache_salt=7))
