"""Which models the engine serves exactly, checked when a model loads.

The engine computes attention itself (engine/attention.py) over its own KV
cache, so it serves a model only if every layer's attention is what that code
reproduces: causal attention, full or over a sliding window, with the layer's
scaling and optional logit soft-capping, over a plain key/value cache.
Anything else (chunked or linear attention, state-space layers, attention
sinks, a bidirectional or encoder-decoder model, a cache of another kind) is
refused with :class:`~engine.errors.UnsupportedModelError`, naming the model
and the feature, rather than served with silently different output.

Most of this is read from the config; what only the modeling code knows (the
arguments each layer passes to its attention function) is read by one probe
forward in which every layer's attention call is recorded instead of computed.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import torch

from engine.errors import UnsupportedModelError

_SERVED_LAYER_TYPES = ("full_attention", "sliding_attention")
_SERVED_IMPLEMENTATIONS = ("sdpa", "eager")
# Arguments some layers pass to their attention function that do not change its result.
_NEUTRAL_ARGUMENTS = frozenset(
    {"position_ids", "use_cache", "output_attentions", "output_router_logits"}
)
# Attention arguments the engine knows it does not implement, and what they stand for.
_FEATURES = {
    "s_aux": "attention sinks (s_aux)",
    "sinks": "attention sinks",
    "position_bias": "an attention position bias",
    "indices": "sparse attention (indices)",
    "block_indices": "block-sparse attention",
}

# Layer types transformers knows that the engine does not serve, and what they are.
_LAYER_KINDS = {
    "chunked_attention": "attention within fixed chunks",
    "linear_attention": "state-space or linear attention, a recurrent state",
    "indexed_attention": "sparse attention over selected keys",
    "conv": "a convolution state",
    "hybrid": "attention alongside a state-space mixer",
    "hybrid_sliding": "sliding attention alongside a state-space mixer",
    "dummy": "no attention, or keys and values shared with another layer",
}

_PROBE = "autoglm_probe"
_probe_calls: ContextVar[list[_AttentionCall] | None] = ContextVar(
    "autoglm_probe_calls", default=None
)


def check_servable(model: Any, name: str) -> None:
    """Raise UnsupportedModelError unless the engine serves ``model`` exactly as generate() does."""
    config = model.config.get_text_config()
    _check_causal_lm(model, name)
    _check_cache(model, name)
    windows = attention_windows(config, name)
    check_implementation(config, name)
    _check_attention_calls(model, config, name, windows)


def attention_windows(config: Any, name: str) -> list[int | None]:
    """Each layer's sliding window (None: full attention), as generate()'s masks and cache see it.

    Layer types come from transformers' own reading of the config (explicit
    ``layer_types``, or inferred from ``sliding_window`` and
    ``attention_chunk_size``); any kind but full and sliding attention is refused.
    """
    from transformers.cache_utils import get_layer_types_and_kwargs

    layer_types, layer_kwargs = get_layer_types_and_kwargs(config)
    unserved = sorted(set(layer_types) - set(_SERVED_LAYER_TYPES))
    if unserved:
        kinds = ", ".join(
            f"{kind!r} ({_LAYER_KINDS.get(kind, 'not plain attention')})" for kind in unserved
        )
        raise UnsupportedModelError(name, f"layers of type {kinds}")
    return [
        kwargs["sliding_window"] if kind == "sliding_attention" else None
        for kind, kwargs in zip(layer_types, layer_kwargs, strict=True)
    ]


def check_implementation(config: Any, name: str) -> None:
    """Refuse attention implementations other than sdpa and eager, whose math the engine uses."""
    implementation = getattr(config, "_attn_implementation", None) or "eager"
    if implementation not in _SERVED_IMPLEMENTATIONS:
        raise UnsupportedModelError(
            name,
            f"the {implementation!r} attention implementation (the engine reproduces "
            f"{' and '.join(_SERVED_IMPLEMENTATIONS)})",
        )


def check_attention_call(
    name: str, module: Any, is_causal: bool | None, arguments: dict[str, Any]
) -> None:
    """Raise for an attention call that asks for math the engine's attention does not do.

    ``arguments`` are the call's keyword arguments other than those the
    engine implements (dropout, scaling, sliding_window, softcap, is_causal).
    An unknown argument set to None asks for nothing; set to anything else it
    may change the result, so it is refused rather than ignored.
    """
    if is_causal is False or getattr(module, "is_causal", True) is False:
        raise UnsupportedModelError(name, "bidirectional (non-causal) attention")
    for argument, value in arguments.items():
        if value is not None and argument not in _NEUTRAL_ARGUMENTS:
            feature = _FEATURES.get(argument, f"the attention argument {argument!r}")
            raise UnsupportedModelError(name, feature)


def check_config_loadable(config: Any, name: str) -> None:
    """Refuse, before any weight is read, a config that AutoModelForCausalLM has no class for
    (an encoder-decoder such as T5, an encoder such as a classifier): transformers' own error
    names neither the model nor the reason, and lists every causal LM it knows."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    if type(config) in MODEL_FOR_CAUSAL_LM_MAPPING:
        return
    if getattr(config, "is_encoder_decoder", False):
        raise UnsupportedModelError(name, f"an encoder-decoder architecture ({config.model_type})")
    raise UnsupportedModelError(
        name, f"a model type with no causal language model class ({config.model_type})"
    )


def _check_causal_lm(model: Any, name: str) -> None:
    if getattr(model.config, "is_encoder_decoder", False):
        raise UnsupportedModelError(
            name, f"an encoder-decoder architecture ({type(model).__name__})"
        )
    if not model.can_generate():
        raise UnsupportedModelError(
            name, f"a model class that is not a causal language model ({type(model).__name__})"
        )


def _check_cache(model: Any, name: str) -> None:
    # generate() gives these models a cache class of their own (recurrent state,
    # memory, ...), which the engine's per-row key/value buffers cannot stand in for.
    if not type(model)._supports_default_dynamic_cache():
        raise UnsupportedModelError(
            name, f"a cache other than plain keys and values ({type(model).__name__})"
        )


def _check_attention_calls(model: Any, config: Any, name: str, windows: list[int | None]) -> None:
    calls = _probe_attention_calls(model, config)
    layers = sorted(call.layer for call in calls)
    if layers != list(range(config.num_hidden_layers)):
        raise UnsupportedModelError(
            name,
            f"layers that do not attend once each through transformers' attention interface "
            f"(attention calls for layers {layers} of {config.num_hidden_layers})",
        )
    for call in calls:
        check_attention_call(name, call.module, call.is_causal, call.arguments)
        if call.sliding_window != windows[call.layer]:
            # The engine masks by the window a layer passes; generate() by the one the
            # config gives the layer's mask. Served only where the two agree.
            raise UnsupportedModelError(
                name,
                f"a sliding window of {call.sliding_window} in layer {call.layer} where its "
                f"layer type gives {windows[call.layer]}",
            )


@dataclass
class _AttentionCall:
    """One layer's call of its attention function, as the engine's attention would receive it."""

    module: Any
    sliding_window: int | None
    is_causal: bool | None
    arguments: dict[str, Any]  # all but those the engine implements

    @property
    def layer(self) -> int:
        return getattr(self.module, "layer_idx", -1)


def _probe_attention_calls(model: Any, config: Any) -> list[_AttentionCall]:
    """Every attention call of a two-token forward, computing none."""
    _register_probe()
    calls: list[_AttentionCall] = []
    token = _probe_calls.set(calls)
    original = config._attn_implementation_internal
    config._attn_implementation_internal = _PROBE
    try:
        with torch.inference_mode():
            model(
                input_ids=torch.zeros((1, 2), dtype=torch.long, device=model.device),
                use_cache=False,
            )
    finally:
        config._attn_implementation_internal = original
        _probe_calls.reset(token)
    return calls


def _probe_attention(
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
    """Records the call; its signature is engine.attention._engine_attention's."""
    calls = _probe_calls.get()
    assert calls is not None, "the probe attention runs only inside _probe_attention_calls"
    calls.append(_AttentionCall(module, sliding_window, is_causal, kwargs))
    # Zeros of the output's shape [batch, query length, heads, value dim]: the
    # probe only needs every layer to be reached.
    batch, heads, length, _ = query.shape
    return query.new_zeros((batch, length, heads, value.shape[-1])), None


def _register_probe() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(_PROBE, _probe_attention)
    AttentionMaskInterface.register(_PROBE, sdpa_mask)
