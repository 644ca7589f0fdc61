"""Models the engine cannot serve exactly are refused when they load, naming model and feature.

Tiny random models of each refused kind (engine/tests/architectures.py),
loaded through engine.registry.load_model, and, for what a checkpoint
cannot produce through AutoModelForCausalLM, engine.support.check_servable
directly. The engine's own guards (at construction, and in its attention at
run time) refuse the same models if they are handed one that skipped the
registry.
"""

from __future__ import annotations

import dataclasses
import functools
import threading
from pathlib import Path
from typing import Any

import pytest
import torch

from engine.engine import BatchingEngine
from engine.errors import EngineDeadError, UnsupportedModelError
from engine.registry import LoadedModel, load_model
from engine.request import EngineRequest
from engine.support import check_servable

from .architectures import build

_SMALL: dict[str, Any] = {
    "vocab_size": 256,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 8,
    "pad_token_id": 0,
}
_GPT_OSS = ("GptOssConfig", {**_SMALL, "num_local_experts": 2, "num_experts_per_tok": 1})
_LLAMA4 = (
    "Llama4TextConfig",
    {**_SMALL, "num_local_experts": 2, "intermediate_size_mlp": 64, "attention_chunk_size": 8},
)
_MAMBA = ("MambaConfig", {"vocab_size": 256, "hidden_size": 32, "num_hidden_layers": 2})

REFUSED = {
    "llama4-chunked": (*_LLAMA4, "'chunked_attention'"),
    "gpt-oss-sinks": (*_GPT_OSS, "attention sinks (s_aux)"),
    "mamba": (*_MAMBA, "'linear_attention' (state-space"),
    "jamba": (
        "JambaConfig",
        {**_SMALL, "attn_layer_period": 2, "attn_layer_offset": 1, "num_experts": 2},
        "'linear_attention' (state-space",
    ),
    "falcon-h1": (
        "FalconH1Config",
        {**_SMALL, "mamba_d_ssm": 32, "mamba_n_heads": 4, "mamba_d_head": 8, "mamba_d_state": 8},
        "'hybrid' (attention alongside a state-space mixer)",
    ),
    "rwkv": (
        "RwkvConfig",
        {"vocab_size": 256, "hidden_size": 32, "num_hidden_layers": 2, "context_length": 64},
        "a cache other than plain keys and values (RwkvForCausalLM)",
    ),
    "bert-encoder": (
        "BertConfig",
        {"vocab_size": 256, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4},
        "bidirectional (non-causal) attention",
    ),
    "gemma3-bidirectional": (
        "Gemma3TextConfig",
        {**_SMALL, "sliding_window": 8, "use_bidirectional_attention": True},
        "bidirectional (non-causal) attention",
    ),
}


def _build(tmp_path: Path, config_class: str, settings: dict[str, Any]) -> Path:
    return build(tmp_path / "model", config_class, settings)


def _llama() -> Any:
    import transformers

    settings = {k: v for k, v in _SMALL.items() if k != "head_dim"}
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(**settings)).eval()


@pytest.mark.parametrize("kind", sorted(REFUSED))
def test_it_refuses_a_model_it_cannot_serve_exactly(tmp_path: Path, kind: str) -> None:
    config_class, settings, feature = REFUSED[kind]
    path = _build(tmp_path, config_class, settings)

    with pytest.raises(UnsupportedModelError) as refused:
        load_model(kind, path, device="cpu", dtype="float32")

    message = str(refused.value)
    assert f"model {kind!r}" in message
    assert feature in message
    assert refused.value.model == kind
    assert isinstance(refused.value, ValueError)


def test_it_refuses_a_model_that_is_not_a_causal_lm() -> None:
    import transformers

    bare = _llama().model  # the decoder without its language-model head
    t5 = transformers.T5ForConditionalGeneration(
        transformers.T5Config(vocab_size=256, d_model=32, d_ff=64, num_layers=1, num_heads=2)
    )

    with pytest.raises(UnsupportedModelError, match="'bare'.*not a causal language model"):
        check_servable(bare, "bare")
    with pytest.raises(UnsupportedModelError, match="'t5'.*encoder-decoder"):
        check_servable(t5, "t5")


def test_it_refuses_a_layer_that_attends_outside_the_attention_interface() -> None:
    model = _llama()

    class OwnAttention(torch.nn.Module):  # as custom modeling code might compute it
        def forward(self, hidden_states, *args, **kwargs):
            return torch.zeros_like(hidden_states), None

    model.model.layers[1].self_attn = OwnAttention()

    with pytest.raises(UnsupportedModelError, match=r"'custom'.*calls for layers \[0\] of 2"):
        check_servable(model, "custom")


def test_it_refuses_a_window_its_masks_would_not_apply() -> None:
    # The layer passes a window that generate()'s masks, built from the config, ignore.
    model = _llama()
    attention = model.model.layers[0].self_attn
    attention.forward = functools.partial(attention.forward, sliding_window=4)

    with pytest.raises(UnsupportedModelError, match="'odd'.*window of 4 in layer 0.*gives None"):
        check_servable(model, "odd")


def _unchecked(
    tmp_path: Path, name: str, config_class: str, settings: dict[str, Any]
) -> LoadedModel:
    """A LoadedModel that skipped load_model's check, as a caller could build by hand."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = _build(tmp_path, config_class, settings)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    return LoadedModel(
        name=name,
        path=path,
        model=model,
        tokenizer=AutoTokenizer.from_pretrained(path),
        device=model.device,
        dtype=model.dtype,
        context_window=64,
        load_seconds=0.0,
    )


def test_the_engine_refuses_unserved_layer_types_itself(tmp_path: Path) -> None:
    loaded = _unchecked(tmp_path, "llama4-chunked", *_LLAMA4)

    with pytest.raises(UnsupportedModelError, match="'llama4-chunked'.*'chunked_attention'"):
        BatchingEngine(loaded)


def test_its_attention_raises_for_an_argument_it_does_not_implement(tmp_path: Path) -> None:
    # gpt-oss passes its sinks as s_aux; computing attention without them would
    # answer differently, so the forward fails instead (and the engine with it).
    loaded = _unchecked(tmp_path, "gpt-oss-sinks", *_GPT_OSS)
    loaded = dataclasses.replace(loaded, lock=threading.Lock())

    with BatchingEngine(loaded, max_batch_size=2) as engine:
        handle = engine.submit(EngineRequest(prompt_ids=[1, 2, 3], max_tokens=2, temperature=0))
        with pytest.raises(EngineDeadError) as dead:
            handle.result(timeout=30)

    assert isinstance(dead.value.__cause__, UnsupportedModelError)
    assert "'gpt-oss-sinks'" in dead.value.reason
    assert "attention sinks (s_aux)" in dead.value.reason
