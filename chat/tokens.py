"""Prompt-size estimates in the web process, for reserving tokens against quotas at admission.

Uses the model's own ``tokenizer.json`` through the ``tokenizers`` library (no torch) when the
model directory is on this machine, else a bytes-per-token rule of thumb. The reservation is
settled to the worker's exact count when the job ends, so an estimate only has to be close.
"""

import json
import threading
from pathlib import Path

from django.conf import settings

from engine.model_files import ModelFilesError, model_dir

PER_MESSAGE_OVERHEAD = 4  # role markers and separators of a chat template


_tokenizers: dict[str, object] = {}
_tokenizers_lock = threading.Lock()


def _model_file(model: str, name: str) -> Path | None:
    """A file of the model's local directory (for a GGUF file, of its converted copy)."""
    location = settings.AUTOGLM_MODELS.get(model)
    if not location:
        return None
    try:
        path = model_dir(location, settings.AUTOGLM_MODEL_CACHE) / name
    except ModelFilesError:
        return None
    return path if path.is_file() else None


def _tokenizer(model: str):
    """The model's tokenizer, loaded once per process: the first burst of requests after a
    start must not each parse the file (the demo model's 0.5 MB one takes ~20 ms; real models'
    are several MB). Not remembered while missing: a GGUF model's appears when the worker has
    converted it."""
    try:
        return _tokenizers[model]
    except KeyError:
        pass
    with _tokenizers_lock:
        if model not in _tokenizers:
            tokenizer = _load_tokenizer(model)
            if tokenizer is None:
                return None
            _tokenizers[model] = tokenizer
        return _tokenizers[model]


def _load_tokenizer(model: str):
    path = _model_file(model, "tokenizer.json")
    if path is None:
        return None
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(path))


_windows: dict[str, int | None] = {}


def context_window(model: str) -> int | None:
    """The model's context window from its config.json, when the directory is local."""
    if model in _windows:
        return _windows[model]
    path = _model_file(model, "config.json")
    if path is None:
        return None
    try:
        value = json.loads(path.read_text()).get("max_position_embeddings")
    except (OSError, ValueError):
        value = None
    _windows[model] = int(value) if isinstance(value, int) else None
    return _windows[model]


def decode_tokens(model: str, ids: list[int]) -> str | None:
    """The text of a prompt given as token ids, or None without the model's tokenizer here."""
    tokenizer = _tokenizer(model)
    if tokenizer is None:
        return None
    return tokenizer.decode(ids, skip_special_tokens=False)


def message_text(message: dict) -> str:
    calls = message.get("tool_calls")
    return (message.get("content") or "") + (json.dumps(calls) if calls else "")


def estimate_prompt_tokens(
    model: str, messages: list[dict], tools: list[dict] | None = None
) -> int:
    """About how many tokens the prompt takes: its messages' text, their tool calls, and the
    tools' definitions (rendered into the prompt as JSON); at most the context window."""
    total = count_prompt_tokens(model, messages, tools)
    window = context_window(model)
    # A session longer than the window is trimmed by the worker: never reserve beyond it.
    return min(total, window) if window else total


def count_prompt_tokens(model: str, messages: list[dict], tools: list[dict] | None = None) -> int:
    """``estimate_prompt_tokens`` without the cap: what the messages take, even beyond the
    window."""
    tokenizer = _tokenizer(model)
    texts = [message_text(m) for m in messages]
    if tools:
        texts.append(json.dumps(tools))
    if tokenizer is not None:
        counted = sum(len(e.ids) for e in tokenizer.encode_batch(texts, add_special_tokens=False))
    else:
        counted = sum(len(t.encode()) for t in texts) // 3 + 1
    return counted + PER_MESSAGE_OVERHEAD * len(messages) + 2
