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


def _tokenizer() -> Any:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = Tokenizer(models.WordLevel({f"w{i}": i for i in range(VOCAB)}, unk_token="w0"))
    words.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=words)
