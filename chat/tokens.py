"""Prompt-size estimates in the web process, for reserving tokens against quotas at admission.

Uses the model's own ``tokenizer.json`` through the ``tokenizers`` library (no torch) when the
model directory is on this machine, else a bytes-per-token rule of thumb. The reservation is
settled to the worker's exact count when the job ends, so an estimate only has to be close.
"""

import functools
import json
import threading
from pathlib import Path

from django.conf import settings

PER_MESSAGE_OVERHEAD = 4  # role markers and separators of a chat template


_tokenizers: dict[str, object] = {}
_tokenizers_lock = threading.Lock()


def _tokenizer(model: str):
    """The model's tokenizer, loaded once per process: the first burst of requests after a
    start must not each parse the file (the demo model's 0.5 MB one takes ~20 ms; real models'
    are several MB)."""
    try:
        return _tokenizers[model]
    except KeyError:
        pass
    with _tokenizers_lock:
        if model not in _tokenizers:
            _tokenizers[model] = _load_tokenizer(model)
        return _tokenizers[model]


def _load_tokenizer(model: str):
    path = Path(settings.AUTOGLM_MODELS.get(model, "")) / "tokenizer.json"
    if not path.is_file():
        return None
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(path))


@functools.lru_cache(maxsize=16)
def context_window(model: str) -> int | None:
    """The model's context window from its config.json, when the directory is local."""
    path = Path(settings.AUTOGLM_MODELS.get(model, "")) / "config.json"
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    value = config.get("max_position_embeddings")
    return int(value) if isinstance(value, int) else None


def estimate_prompt_tokens(model: str, messages: list[dict[str, str]]) -> int:
    tokenizer = _tokenizer(model)
    texts = [m["content"] for m in messages]
    if tokenizer is not None:
        counted = sum(len(e.ids) for e in tokenizer.encode_batch(texts, add_special_tokens=False))
    else:
        counted = sum(len(t.encode()) for t in texts) // 3 + 1
    total = counted + PER_MESSAGE_OVERHEAD * len(messages) + 2
    window = context_window(model)
    # A session longer than the window is trimmed by the worker: never reserve beyond it.
    return min(total, window) if window else total
