"""The KV cache: one preallocated buffer per layer, one row per job in the batch.

Each layer's buffer has shape ``[rows, kv_heads, capacity, head_dim]``.
Decoding jobs occupy rows ``0..n-1``, so the decode forward attends over one
strided block of the buffer (those rows, up to the longest one's length), read
in place (no per-step gather, padding or concatenation); rows have different
lengths, so the decode forward gets
per-row ``position_ids`` and a padding mask. Rows are compacted (a few row
copies, :meth:`SlotKVCache.copy_row` and :meth:`SlotKVCache.swap_rows`, in the
order the scheduler decides) when jobs leave. The buffers grow on demand, never
beyond ``max_cache_bytes`` (admission reserves room for each job's prompt +
max_tokens), and are freed after ``idle_release_s`` without work.

The cache is a duck-typed transformers ``Cache``: the model calls its ``update``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch


def _round_up(value: int, quantum: int) -> int:
    return -(-value // quantum) * quantum


class SlotKVCache:
    """Per-layer key/value buffers ``[rows, kv_heads, capacity, head_dim]``, one row per job.

    Duck-types the part of transformers' ``Cache`` that a decoder-only model's
    forward uses: attention layers call :meth:`update` with the new keys and
    values. Around each forward the model runner sets :attr:`plan` (through
    ``engine.attention.EngineAttention``): which rows and positions the new
    tokens belong to.
    """

    is_compileable = False
    ROW_QUANTUM = 8
    LENGTH_QUANTUM = 64

    def __init__(
        self,
        *,
        num_layers: int,
        kv_heads: int,
        head_dim: int,
        dtype: torch.dtype,
        device: torch.device,
        max_rows: int,
        max_length: int,
    ) -> None:
        self.num_layers = num_layers
        self.kv_heads = kv_heads
        self.head_dim = head_dim
        self.dtype = dtype
        self.device = device
        self.max_rows = max_rows
        self.max_length = max_length
        element = torch.tensor([], dtype=dtype).element_size()
        self.bytes_per_token = num_layers * 2 * kv_heads * head_dim * element
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self.rows = 0
        self.capacity = 0
        self.plan: ForwardPlan | None = None

    # Sizing.

    @property
    def nbytes(self) -> int:
        return self.rows * self.capacity * self.bytes_per_token

    def allocation_bytes(self, rows: int, length: int) -> int:
        """Bytes the buffers would take to hold ``rows`` jobs of up to ``length`` tokens."""
        rows = min(self.max_rows, _round_up(rows, self.ROW_QUANTUM))
        length = min(self.max_length, _round_up(length, self.LENGTH_QUANTUM))
        return rows * length * self.bytes_per_token

    def ensure(self, rows: int, length: int, live_rows: int, length_limit: int) -> None:
        """Grow the buffers to hold ``rows`` rows of ``length`` tokens, keeping live data.

        ``length_limit`` is the longest any admitted job may get (prompt +
        max_tokens): capacity never exceeds it, so allocation stays within
        what admission accounted for, and when it is near, capacity jumps
        straight to it (one allocation for the whole batch). Otherwise it
        grows by a quarter at a time: decode attention reads the whole
        capacity, so overshooting costs time on every step.
        """
        new_rows, new_capacity = self.rows, self.capacity
        if rows > self.rows:
            new_rows = min(self.max_rows, _round_up(rows, self.ROW_QUANTUM))
        if length > self.capacity:
            limit = _round_up(max(length, min(length_limit, self.max_length)), 8)
            target = _round_up(length, self.LENGTH_QUANTUM)
            if limit <= 2 * target:
                target = limit
            else:
                step = max(self.LENGTH_QUANTUM, self.capacity // 4)
                target = min(limit, max(target, _round_up(self.capacity + step, 64)))
            new_capacity = target
        if (new_rows, new_capacity) == (self.rows, self.capacity):
            return
        shape = (new_rows, self.kv_heads, new_capacity, self.head_dim)
        keep_rows, keep_len = min(live_rows, self.rows), self.capacity
        keys, values = [], []
        for layer in range(self.num_layers):
            # Zeroed, not empty: attention reads (masked) padding slots, and a NaN
            # bit pattern there would poison the row (0 * NaN is NaN).
            k = torch.zeros(shape, dtype=self.dtype, device=self.device)
            v = torch.zeros(shape, dtype=self.dtype, device=self.device)
            if keep_rows and keep_len:
                k[:keep_rows, :, :keep_len] = self.keys[layer][:keep_rows]
                v[:keep_rows, :, :keep_len] = self.values[layer][:keep_rows]
            keys.append(k)
            values.append(v)
        self.keys, self.values = keys, values
        self.rows, self.capacity = new_rows, new_capacity

    def release(self) -> None:
        self.keys, self.values = [], []
        self.rows = self.capacity = 0

    # Row moves (the scheduler keeps decoding jobs in rows 0..n-1).

    def copy_row(self, src: int, dst: int, length: int) -> None:
        if length:
            for buffers in (self.keys, self.values):
                for buf in buffers:
                    buf[dst, :, :length] = buf[src, :, :length]

    def swap_rows(self, a: int, a_len: int, b: int, b_len: int) -> None:
        for buffers in (self.keys, self.values):
            for buf in buffers:
                saved = buf[a, :, :a_len].clone()
                if b_len:
                    buf[a, :, :b_len] = buf[b, :, :b_len]
                if a_len:
                    buf[b, :, :a_len] = saved

    # The transformers Cache surface.

    def update(
        self,
        key_states: torch.Tensor,
        value_states: torch.Tensor,
        layer_idx: int,
        *args: Any,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        plan = self.plan
        assert plan is not None, "engine cache used outside an engine forward"
        k_buf, v_buf = self.keys[layer_idx], self.values[layer_idx]
        if plan.decode:
            # key_states: [n, kv_heads, 1, head_dim] -> row r, position positions[r].
            k_buf[plan.row_index, :, plan.pos_index] = key_states[:, :, 0]
            v_buf[plan.row_index, :, plan.pos_index] = value_states[:, :, 0]
            return k_buf[: plan.rows, :, : plan.kv_len], v_buf[: plan.rows, :, : plan.kv_len]
        for row, start, length, offset in plan.segments:
            k_buf[row, :, start : start + length] = key_states[0, :, offset : offset + length]
            v_buf[row, :, start : start + length] = value_states[0, :, offset : offset + length]
        # The engine's attention function attends each chunk to its own row.
        return key_states, value_states

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return 0 if self.plan is None else self.plan.q_offset

    def get_query_offset(self, layer_idx: int = 0) -> int:
        return 0 if self.plan is None else self.plan.q_offset

    def get_mask_sizes(self, query_length: int, layer_idx: int = 0) -> tuple[int, int]:
        return (query_length if self.plan is None else self.plan.kv_len), 0


@dataclass
class ForwardPlan:
    """What the current engine forward computes, for the cache and the attention function."""

    cache: SlotKVCache
    decode: bool
    q_offset: int
    kv_len: int
    # Decode: rows 0..rows-1, one token each at pos_index[r]; masks maps each sliding window
    # of the model's layers (None: full attention) to its [rows, 1, 1, kv_len] mask, None
    # where every row sees every slot.
    rows: int = 0
    row_index: torch.Tensor | None = None
    pos_index: torch.Tensor | None = None
    masks: Mapping[int | None, torch.Tensor | None] = field(default_factory=dict)
    # Prefill: packed prompt chunks (row, start, length, offset in the packed row).
    segments: Sequence[tuple[int, int, int, int]] = ()
