"""Tiny random models of many architectures, built offline, for the engine's architecture tests.

Each is laid out like a downloaded checkpoint (config, safetensors weights,
tokenizer), so tests load it through engine.registry.load_model, the real
from_pretrained path. The tokenizer is a word-level one over "w0".."w255":
every token decodes to its own word, so decoded text splits back into the
tokens, and no token in the vocabulary ends a sequence, so every answer runs
its full length.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

VOCAB = 256
WINDOW = 8  # sliding window of the sliding models: shorter than most test prompts
_COMMON: dict[str, Any] = {
    "vocab_size": VOCAB,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 512,
    "pad_token_id": 0,
    "bos_token_id": None,
    "eos_token_id": None,
    # Wider than the usual 0.02: random logits far apart, so no greedy step is
    # a near-tie that float rounding could flip.
    "initializer_range": 0.2,
}
_MOE = {"num_experts": 4, "num_experts_per_tok": 2}
_MIXED = ["sliding_attention", "full_attention", "sliding_attention"]

# family -> (config class name, its settings besides _COMMON)
FAMILIES: dict[str, tuple[str, dict[str, Any]]] = {
    "llama": ("LlamaConfig", {}),
    "qwen2": ("Qwen2Config", {}),
    "qwen2-sliding": (
        "Qwen2Config",
        {"use_sliding_window": True, "sliding_window": WINDOW, "max_window_layers": 1},
    ),
    "qwen3": ("Qwen3Config", {"head_dim": 16}),
    "mistral": ("MistralConfig", {"sliding_window": WINDOW}),
    "gemma2": (
        "Gemma2Config",
        {
            "head_dim": 16,
            "sliding_window": WINDOW,
            "query_pre_attn_scalar": 24,
            "layer_types": _MIXED,
        },
    ),
    "gemma3": (
        "Gemma3TextConfig",
        {
            "head_dim": 16,
            "sliding_window": WINDOW,
            "query_pre_attn_scalar": 24,
            "layer_types": _MIXED,
        },
    ),
    "glm4": ("Glm4Config", {"head_dim": 16}),
    "phi3": ("Phi3Config", {}),
    "qwen3-moe": ("Qwen3MoeConfig", {"head_dim": 16, "moe_intermediate_size": 64, **_MOE}),
    "olmo2": ("Olmo2Config", {}),
}


def build(directory: Path, config_class: str, settings: dict[str, Any], seed: int = 0) -> Path:
    """Save a random model of ``config_class`` and the word-level tokenizer to ``directory``."""
    import transformers
    from transformers import AutoModelForCausalLM

    config = getattr(transformers, config_class)(**settings)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(directory)
    _tokenizer().save_pretrained(directory)
    return directory


def build_family(directory: Path, family: str) -> Path:
    config_class, settings = FAMILIES[family]
    return build(directory, config_class, {**_COMMON, **settings})


def _tokenizer() -> Any:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = Tokenizer(models.WordLevel({f"w{i}": i for i in range(VOCAB)}, unk_token="w0"))
    words.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=words)
