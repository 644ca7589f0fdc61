"""Attention for the engine's forwards, switched on around them by :class:`EngineAttention`.

Attention goes through a function registered with transformers'
``AttentionInterface`` (switched on for the engine's forwards only), so any
decoder-only model with full attention runs through its own ``forward``. Prompt
chunks use transformers' sdpa attention, a fresh prompt exactly as generate()
computes it, and float32 decoding uses sdpa with the padding mask, so greedy
output in float32 equals generate()'s token for token. In bfloat16/float16,
decode attention is two batched GEMVs instead of torch's CPU flash-attention
kernel, which is several times slower there for a single query.
"""

from __future__ import annotations

from contextvars import ContextVar, Token
from typing import Any

import torch

from engine.kv_cache import ForwardPlan

_ENGINE_ATTENTION = "autoglm_engine"
_active_plan: ContextVar[ForwardPlan | None] = ContextVar("autoglm_engine_plan", default=None)


class EngineAttention:
    """The engine's attention for one model: ``with attention(plan): model(...)``.

    Inside the ``with``, the model's attention layers call
    :func:`_engine_attention` and its cache sees ``plan``; outside, the model
    is untouched. Raises ValueError at construction for a model the engine
    cannot serve exactly. One instance is reused for every forward (no
    allocation per step); it is not reentrant.
    """

    def __init__(self, config: Any) -> None:
        attn_impl = getattr(config, "_attn_implementation", None) or "eager"
        if attn_impl not in ("sdpa", "eager"):
            # The engine's forwards use sdpa math; greedy output equals generate()'s
            # exactly when generate() uses sdpa too.
            raise ValueError(
                f"BatchingEngine supports the sdpa and eager attention implementations, "
                f"not {attn_impl!r}"
            )
        layer_types = getattr(config, "layer_types", None) or []
        if any(kind != "full_attention" for kind in layer_types):
            raise ValueError("BatchingEngine supports models whose layers all use full attention")
        _register_engine_attention()
        self._config = config
        self._plan: ForwardPlan | None = None
        self._original: str | None = None
        self._token: Token[ForwardPlan | None] | None = None

    def __call__(self, plan: ForwardPlan) -> EngineAttention:
        self._plan = plan
        return self

    def __enter__(self) -> None:
        plan, config = self._plan, self._config
        assert plan is not None, "use as: with attention(plan): ..."
        self._original = config._attn_implementation_internal
        plan.cache.plan = plan
        self._token = _active_plan.set(plan)
        # The switch is per forward and under the model's lock, which generate()
        # also holds while it runs, so other users of the model never see it.
        config._attn_implementation_internal = _ENGINE_ATTENTION

    def __exit__(self, *exc_info: object) -> None:
        plan, token = self._plan, self._token
        assert plan is not None and token is not None
        self._config._attn_implementation_internal = self._original
        _active_plan.reset(token)
        plan.cache.plan = None
        self._plan = self._token = None


def _engine_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Attention for the engine's forwards (registered with transformers' AttentionInterface).

    Prefill: each packed prompt chunk attends only to its own job, through
    transformers' own sdpa attention (a fresh prompt exactly as generate()
    computes it), so packing costs no attention over other prompts. Decode in
    float32: transformers' sdpa with the padding mask. Decode in half
    precision: two batched GEMVs over the cache rows, several times faster on
    CPU than torch's flash-attention kernel with a single query.
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    plan = _active_plan.get()
    if plan is None:  # not an engine forward
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    if plan.decode:
        if query.dtype == torch.float32 or query.device.type != "cpu":
            return sdpa_attention_forward(
                module, query, key, value, plan.mask, dropout=dropout, scaling=scaling, **kwargs
            )
        return _gemv_attention(query, key, value, plan.mask, scaling), None

    cache, layer = plan.cache, module.layer_idx
    outputs = []
    for row, start, length, offset in plan.segments:
        q = query[:, :, offset : offset + length]
        if start == 0:
            k = key[:, :, offset : offset + length]
            v = value[:, :, offset : offset + length]
            mask = None  # sdpa's is_causal, as for an unbatched prompt
        else:
            end = start + length
            k = cache.keys[layer][row : row + 1, :, :end]
            v = cache.values[layer][row : row + 1, :, :end]
            positions = torch.arange(start, end, device=query.device)
            mask = torch.arange(end, device=query.device)[None, :] <= positions[:, None]
            mask = mask[None, None]
        out, _ = sdpa_attention_forward(
            module, q, k, v, mask, dropout=dropout, scaling=scaling, is_causal=True
        )
        outputs.append(out)  # [1, length, heads, head_dim]
    return (outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=1)), None


def _gemv_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor | None,
    scaling: float | None,
) -> torch.Tensor:
    """Single-query attention: query [B, Hq, 1, D] over key/value [B, Hkv, L, D]."""
    batch, heads, _, dim = query.shape
    kv_heads = key.shape[1]
    q = query.reshape(batch, kv_heads, heads // kv_heads, dim)  # grouped query heads
    scale = dim**-0.5 if scaling is None else scaling
    # K @ q^T keeps the cache in its natural layout (no transposed copy of K).
    scores = torch.matmul(key, q.transpose(-1, -2)).transpose(-1, -2).float() * scale
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
