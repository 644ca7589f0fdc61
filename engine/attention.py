"""Attention for the engine's forwards, switched on around them by :class:`EngineAttention`.

Attention goes through a function registered with transformers'
``AttentionInterface`` (switched on for the engine's forwards only), so any
decoder-only model that engine/support.py accepts runs through its own
``forward``: causal attention, full or over a sliding window, with the layer's
scaling and, for eager models such as Gemma 2, logit soft-capping. The engine
keeps every row's full KV history and masks out what a layer's window
excludes: key j is visible to the query at position i iff
``i - window < j <= i``, as transformers' sliding-window masks say.

Each computation follows the one generate() uses for the model, so greedy
output in float32 equals generate()'s token for token: for an sdpa model,
prompt chunks use transformers' sdpa attention (a fresh prompt exactly as
generate() computes it) and float32 decoding uses sdpa with the plan's mask;
for an eager model both follow transformers' eager attention (scores times
scale, soft-cap, mask, softmax in float32). In bfloat16/float16 on CPU, decode
attention is two batched GEMVs instead of torch's flash-attention kernel,
which is several times slower there for a single query.
"""

from __future__ import annotations

from contextvars import ContextVar, Token
from typing import Any

import torch

from engine.kv_cache import ForwardPlan
from engine.support import attention_windows, check_attention_call, check_implementation

_ENGINE_ATTENTION = "autoglm_engine"
_active: ContextVar[EngineAttention | None] = ContextVar("autoglm_engine_attention", default=None)


class EngineAttention:
    """The engine's attention for one model: ``with attention(plan): model(...)``.

    Inside the ``with``, the model's attention layers call
    :func:`_engine_attention` and its cache sees ``plan``; outside, the model
    is untouched. Raises UnsupportedModelError at construction for a model
    whose config asks for attention the engine cannot compute exactly (the
    config half of engine.support.check_servable, which the registry runs
    at load time), and at a forward whose layers pass arguments it does not
    implement. One instance is reused for every forward (no allocation per
    step); it is not reentrant.
    """

    def __init__(self, config: Any, *, name: str, dtype: torch.dtype, device: torch.device) -> None:
        check_implementation(config, name)
        self.name = name
        # The distinct windows of the model's layers (None: full attention).
        self.windows = tuple(dict.fromkeys(attention_windows(config, name)))
        # generate() runs eager attention for models that ask for it (e.g. Gemma 2,
        # whose soft-capping sdpa cannot do); the engine follows the same math.
        self.eager = (getattr(config, "_attn_implementation", None) or "eager") == "eager"
        # Decode with one query: eager math, and in half precision on CPU, GEMVs.
        self.single_query = self.eager or (dtype != torch.float32 and device.type == "cpu")
        _register_engine_attention()
        self._config = config
        self._device = device
        self.plan: ForwardPlan | None = None
        self._original: str | None = None
        self._token: Token[EngineAttention | None] | None = None

    def __call__(self, plan: ForwardPlan) -> EngineAttention:
        self.plan = plan
        return self

    def __enter__(self) -> None:
        plan, config = self.plan, self._config
        assert plan is not None, "use as: with attention(plan): ..."
        self._original = config._attn_implementation_internal
        plan.cache.plan = plan
        self._token = _active.set(self)
        # The switch is per forward and under the model's lock, which generate()
        # also holds while it runs, so other users of the model never see it.
        config._attn_implementation_internal = _ENGINE_ATTENTION

    def __exit__(self, *exc_info: object) -> None:
        plan, token = self.plan, self._token
        assert plan is not None and token is not None
        self._config._attn_implementation_internal = self._original
        _active.reset(token)
        plan.cache.plan = None
        self.plan = self._token = None

    def decode_masks(
        self, positions: list[int], length: int
    ) -> dict[int | None, torch.Tensor | None]:
        """Per window of the model's layers (None: full), the decode mask over ``length`` slots.

        Rows decode at ``positions``; a mask is ``[rows, 1, 1, length]``, bool
        for sdpa and additive for the single-query path, or None where every
        row sees every slot.
        """
        lowest, highest = min(positions), max(positions)
        rows = torch.tensor(positions)
        masks: dict[int | None, torch.Tensor | None] = {}
        for window in self.windows:
            if lowest == length - 1 and (window is None or highest < window):
                masks[window] = None
                continue
            allowed = _allowed_slots(rows, length, window)[:, None, None, :].to(self._device)
            if not self.single_query:
                masks[window] = allowed
                continue
            additive = torch.zeros(allowed.shape, dtype=torch.float32, device=self._device)
            masks[window] = additive.masked_fill_(~allowed, float("-inf"))
        return masks


def _engine_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    sliding_window: int | None = None,
    softcap: float | None = None,
    is_causal: bool | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Attention for the engine's forwards (registered with transformers' AttentionInterface).

    Prefill: each packed prompt chunk attends only to its own job (its own
    KV row), so packing costs no attention over other prompts. Decode: every
    row's one query over rows 0..n-1 of the cache, read in place. Any other
    argument that could change the result raises (UnsupportedModelError).
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    engine = _active.get()
    if engine is None:  # not an engine forward
        return sdpa_attention_forward(
            module,
            query,
            key,
            value,
            attention_mask,
            dropout=dropout,
            scaling=scaling,
            softcap=softcap,
            is_causal=is_causal,
            **kwargs,
        )
    check_attention_call(engine.name, module, is_causal, kwargs)
    plan = engine.plan
    assert plan is not None
    if plan.decode:
        mask = plan.masks[sliding_window]
        if engine.single_query:
            return _gemv_attention(query, key, value, mask, scaling, softcap), None
        # (sdpa raises for a softcap: soft-capped models are eager in transformers.)
        return sdpa_attention_forward(
            module, query, key, value, mask, dropout=dropout, scaling=scaling, softcap=softcap
        )

    cache, layer = plan.cache, module.layer_idx
    outputs = []
    for row, start, length, offset in plan.segments:
        end = start + length
        q = query[:, :, offset : offset + length]
        if start == 0:  # the chunk is all its context: its own fresh keys and values
            k = key[:, :, offset : offset + length]
            v = value[:, :, offset : offset + length]
        else:
            k = cache.keys[layer][row : row + 1, :, :end]
            v = cache.values[layer][row : row + 1, :, :end]
        if engine.eager:
            mask = _chunk_mask(start, end, sliding_window, query.device)
            out = _eager_attention(q, k, v, mask, scaling, softcap)
        else:
            # No mask where causal order alone says it: sdpa's is_causal, as for an
            # unbatched prompt.
            causal = start == 0 and (sliding_window is None or end <= sliding_window)
            mask = None if causal else _chunk_mask(start, end, sliding_window, query.device)
            out, _ = sdpa_attention_forward(
                module,
                q,
                k,
                v,
                mask,
                dropout=dropout,
                scaling=scaling,
                is_causal=True,
                softcap=softcap,
            )
        outputs.append(out)  # [1, length, heads, head_dim]
    return (outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=1)), None


def _allowed_slots(positions: torch.Tensor, length: int, window: int | None) -> torch.Tensor:
    """[queries, length]: whether key slot j is visible to a query at ``positions[i]``.

    Causal (j <= position), and within a sliding window (position - window < j),
    as transformers' masking_utils defines it.
    """
    slots = torch.arange(length, device=positions.device)[None, :]
    allowed = slots <= positions[:, None]
    if window is not None:
        allowed &= slots > positions[:, None] - window
    return allowed


def _chunk_mask(start: int, end: int, window: int | None, device: torch.device) -> torch.Tensor:
    """[1, 1, end - start, end]: which of keys 0..end-1 a chunk's queries at start..end-1 see."""
    return _allowed_slots(torch.arange(start, end, device=device), end, window)[None, None]


def _eager_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    allowed: torch.Tensor,
    scaling: float | None,
    softcap: float | None,
) -> torch.Tensor:
    """transformers' eager attention, step for step, of query [B, Hq, T, D] over key/value.

    Masked scores are -inf rather than eager's dtype minimum plus the score:
    both give exactly zero weight after the softmax.
    """
    from transformers.integrations.sdpa_attention import repeat_kv

    groups = query.shape[1] // key.shape[1]
    key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    scale = query.shape[-1] ** -0.5 if scaling is None else scaling
    scores = torch.matmul(query, key.transpose(2, 3)) * scale
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    scores = scores.masked_fill(~allowed, float("-inf"))
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    return torch.matmul(probs, value).transpose(1, 2).contiguous()


def _gemv_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor | None,
    scaling: float | None,
    softcap: float | None = None,
) -> torch.Tensor:
    """Decode attention as two GEMVs: query [B, Hq, 1, D] over key/value [B, Hkv, L, D].

    Eager attention's math (scale, soft-cap, additive mask, float32 softmax)
    with grouped query heads and no repeated keys.
    """
    batch, heads, _, dim = query.shape
    kv_heads = key.shape[1]
    q = query.reshape(batch, kv_heads, heads // kv_heads, dim)  # grouped query heads
    scale = dim**-0.5 if scaling is None else scaling
    # K @ q^T keeps the cache in its natural layout (no transposed copy of K).
    scores = torch.matmul(key, q.transpose(-1, -2)).transpose(-1, -2).float() * scale
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    if mask is not None:
        scores = scores + mask  # additive float mask [B, 1, 1, L]
    probs = scores.softmax(dim=-1).to(value.dtype)
    out = torch.matmul(probs, value)  # [B, Hkv, group, D]
    return out.reshape(batch, heads, 1, dim).transpose(1, 2)


def _register_engine_attention() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(_ENGINE_ATTENTION, _engine_attention)
    AttentionMaskInterface.register(_ENGINE_ATTENTION, sdpa_mask)
