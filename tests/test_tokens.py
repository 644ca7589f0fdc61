"""Prompt-size estimates in the web process (chat/tokens.py)."""

import json
import shutil
import threading
import time

import pytest
from tokenizers import Tokenizer

from chat import tokens
from engine.model_files import model_dir
from tests.conftest import DEMO_MODEL


@pytest.fixture
def no_loaded_tokenizers(monkeypatch):
    monkeypatch.setattr(tokens, "_tokenizers", {})


def test_it_counts_a_prompt_with_the_models_own_tokenizer(demo_model_dir, no_loaded_tokenizers):
    messages = [{"role": "user", "content": "Hello there, how are you today?"}]
    own = Tokenizer.from_file(str(demo_model_dir / "tokenizer.json"))
    counted = len(own.encode(messages[0]["content"], add_special_tokens=False).ids)

    assert tokens.estimate_prompt_tokens(DEMO_MODEL, messages) == (
        counted + tokens.PER_MESSAGE_OVERHEAD + 2
    )


def test_concurrent_first_requests_load_the_tokenizer_once(
    demo_model_dir, no_loaded_tokenizers, monkeypatch
):
    loads = []
    real_load = tokens._load_tokenizer

    def counting_load(model):
        loads.append(model)
        time.sleep(0.05)  # a big tokenizer.json: the other requests arrive meanwhile
        return real_load(model)

    monkeypatch.setattr(tokens, "_load_tokenizer", counting_load)
    start = threading.Barrier(8)
    seen = []

    def first_request():
        start.wait()
        seen.append(tokens._tokenizer(DEMO_MODEL))

    threads = [threading.Thread(target=first_request) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert loads == [DEMO_MODEL]
    assert len(seen) == 8 and all(t is seen[0] is not None for t in seen)


def test_it_counts_with_a_gguf_models_tokenizer_once_the_worker_has_converted_it(
    demo_model_dir, tmp_path, settings, no_loaded_tokenizers, monkeypatch
):
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    settings.AUTOGLM_MODELS = {"gguf-model": str(gguf)}
    settings.AUTOGLM_MODEL_CACHE = tmp_path / "cache"
    monkeypatch.setattr(tokens, "_windows", {})
    messages = [{"role": "user", "content": "Hello there"}]
    # Not converted yet: the rule of thumb (and the missing file is not remembered).
    assert tokens._tokenizer("gguf-model") is None
    assert tokens.context_window("gguf-model") is None

    converted = model_dir(gguf, settings.AUTOGLM_MODEL_CACHE)
    shutil.copytree(demo_model_dir, converted)
    assert tokens._tokenizer("gguf-model") is not None
    assert (
        tokens.context_window("gguf-model")
        == json.loads((converted / "config.json").read_text())["max_position_embeddings"]
    )
    own = Tokenizer.from_file(str(converted / "tokenizer.json"))
    counted = len(own.encode("Hello there", add_special_tokens=False).ids)
    assert tokens.estimate_prompt_tokens("gguf-model", messages) == (
        counted + tokens.PER_MESSAGE_OVERHEAD + 2
    )
