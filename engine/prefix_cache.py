"""Automatic prefix caching: the KV of token blocks that jobs computed, kept for later jobs that
start with the same tokens.

A chat re-sends its whole history every turn, and many requests share a system prompt. So when
a job's prompt is processed, and again when it ends, the KV of each full block of its tokens
(``block_tokens`` tokens: prompt, then generated ones) is copied out of its KV row into a pool;
a job admitted later copies the blocks of its longest cached prefix into its own row and
prefills only the rest. A copy is a few MB of memory traffic where the prefill it saves is a
forward pass over the same tokens.

A block is found by a key that chains every token before it and the job's ``salt`` (its
tenant), as vLLM and nano-vllm hash their blocks: one tenant's prompts never warm, or time,
another's. The key is Python's hash; each block keeps its tokens and its parent's key, so a
collision is a miss, never another prompt's KV. The pool holds at most ``max_bytes`` of KV and
evicts least recently used blocks, children before their parents (a lookup or store touches
its chain from the last block to the first), so what stays is what prefixes share.

The engine's rows are contiguous per job (engine/kv_cache.py), so reuse is a copy rather than
vLLM's shared pages: no block is ever referenced by a running job, and eviction needs no
reference counts.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from engine.kv_cache import SlotKVCache

DEFAULT_BLOCK_TOKENS = 32


@dataclass(slots=True)
class _Block:
    slot: int  # its place in the pool
    parent: int | None  # the key of the block before it; None for a prefix's first
    tokens: tuple[int, ...]


class PrefixCache:
    """A pool of KV blocks, keyed by prefix, next to one engine's :class:`SlotKVCache`.

    Touched by the engine thread only (other threads may read the counters for stats).
    """

    def __init__(
        self,
        kv: SlotKVCache,
        *,
        max_bytes: int,
        block_tokens: int = DEFAULT_BLOCK_TOKENS,
    ) -> None:
        if block_tokens < 1:
            raise ValueError("block_tokens must be at least 1")
        self._kv = kv
        self.block_tokens = block_tokens
        self.block_bytes = block_tokens * kv.bytes_per_token
        self.max_blocks = max(0, max_bytes) // self.block_bytes
        self._blocks: OrderedDict[int, _Block] = OrderedDict()  # least recently used first
        self._free: list[int] = []
        # Per layer, keys and values: [slots, kv_heads, block_tokens, head_dim], grown on demand.
        self._keys: list[torch.Tensor] = []
        self._values: list[torch.Tensor] = []
        self._slots = 0
        # Counters.
        self.query_tokens = 0  # prompt tokens looked up
        self.hit_tokens = 0  # of those, found
        self.evictions = 0  # blocks evicted to make room

    @property
    def enabled(self) -> bool:
        return self.max_blocks > 0

    @property
    def nbytes(self) -> int:
        return self._slots * self.block_bytes

    @property
    def cached_blocks(self) -> int:
        return len(self._blocks)

    def lookup(self, tokens: Sequence[int], salt: str, limit: int) -> list[int]:
        """The pool slots of the longest cached prefix of ``tokens`` within ``limit`` tokens."""
        self.query_tokens += len(tokens)
        chain: list[int] = []
        slots: list[int] = []
        for key, parent, block in self._chain(tokens, salt, limit):
            found = self._blocks.get(key)
            if found is None or found.parent != parent or found.tokens != block:
                break
            chain.append(key)
            slots.append(found.slot)
        self._touch(chain)
        self.hit_tokens += len(slots) * self.block_tokens
        return slots

    def load(self, row: int, slots: list[int]) -> None:
        """Copy cached blocks into KV row ``row``, positions ``0..len(slots) * block_tokens``."""
        if not slots:
            return
        index = torch.tensor(slots, device=self._kv.device)
        end = len(slots) * self.block_tokens
        for pool, rows in ((self._keys, self._kv.keys), (self._values, self._kv.values)):
            for layer, buf in enumerate(rows):
                blocks = pool[layer].index_select(0, index)  # [n, kv_heads, block, head_dim]
                buf[row, :, :end] = blocks.transpose(0, 1).reshape(buf.shape[1], end, -1)

    def store(self, row: int, tokens: Sequence[int], salt: str) -> None:
        """Keep the full blocks of ``tokens``, whose KV is in row ``row`` (positions 0..len-1)."""
        if not self.enabled:
            return
        chain: list[int] = []
        new: list[tuple[int, _Block, int]] = []  # (key, block, first position)
        for number, (key, parent, block) in enumerate(self._chain(tokens, salt, len(tokens))):
            found = self._blocks.get(key)
            if found is not None:
                if found.parent != parent or found.tokens != block:
                    break  # a hash collision: keep what is there, store nothing after it
                chain.append(key)
                continue
            if not new:  # what the new blocks extend is not evicted for them
                self._touch(chain)
            slot = self._take_slot(protect=chain)
            if slot is None:
                break
            entry = _Block(slot, parent, block)
            self._blocks[key] = entry
            chain.append(key)
            new.append((key, entry, number * self.block_tokens))
        self._touch(chain)
        self._copy_out(row, [(entry.slot, start) for _, entry, start in new])

    def clear(self) -> None:
        self._blocks.clear()
        self._free.clear()
        self._keys, self._values = [], []
        self._slots = 0

    # Internals.

    def _chain(self, tokens: Sequence[int], salt: str, limit: int):
        """(key, parent key, tokens) of each full block of ``tokens[:limit]``, in order."""
        size = self.block_tokens
        parent: int | None = None
        root = hash(("autoglm-prefix", salt))
        for start in range(0, min(limit, len(tokens)) // size * size, size):
            block = tuple(tokens[start : start + size])
            key = hash((root if parent is None else parent, block))
            yield key, parent, block
            parent = key

    def _touch(self, chain: list[int]) -> None:
        """Mark a chain used, its first block most recently: eviction takes children first."""
        for key in reversed(chain):
            self._blocks.move_to_end(key)

    def _take_slot(self, protect: list[int]) -> int | None:
        """A free slot, growing the pool or evicting its least recently used block; None when
        the only blocks left are ``protect``'s (the prefix being stored)."""
        if self._free:
            return self._free.pop()
        if self._slots < self.max_blocks:
            self._grow()
            return self._free.pop()
        for key in self._blocks:  # the least recently used one
            if key in protect:
                return None  # the pool holds nothing but this prefix
            victim = self._blocks.pop(key)
            self.evictions += 1
            return victim.slot
        return None

    def _grow(self) -> None:
        kv = self._kv
        new_slots = min(self.max_blocks, max(64, 2 * self._slots))
        shape = (new_slots, kv.kv_heads, self.block_tokens, kv.head_dim)
        for pool in (self._keys, self._values):
            for layer in range(kv.num_layers):
                grown = torch.empty(shape, dtype=kv.dtype, device=kv.device)
                if self._slots:
                    grown[: self._slots] = pool[layer]
                if len(pool) > layer:
                    pool[layer] = grown
                else:
                    pool.append(grown)
        self._free.extend(range(new_slots - 1, self._slots - 1, -1))
        self._slots = new_slots

    def _copy_out(self, row: int, targets: list[tuple[int, int]]) -> None:
        """Copy KV row ``row``'s blocks starting at each position into each slot."""
        if not targets:
            return
        size = self.block_tokens
        # One gather and one scatter per layer and tensor, however many blocks.
        index = torch.tensor([slot for slot, _ in targets], device=self._kv.device)
        positions = torch.tensor(
            [start + offset for _, start in targets for offset in range(size)],
            device=self._kv.device,
        )
        for pool, rows in ((self._keys, self._kv.keys), (self._values, self._kv.values)):
            for layer, buf in enumerate(rows):
                picked = buf[row].index_select(1, positions)  # [kv_heads, n * block, head_dim]
                heads = picked.shape[0]
                blocks = picked.reshape(heads, len(targets), size, -1).transpose(0, 1)
                pool[layer].index_copy_(0, index, blocks)
