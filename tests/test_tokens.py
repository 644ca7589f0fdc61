"""Prompt-size estimates in the web process (chat/tokens.py)."""

import threading
import time

import pytest
from tokenizers import Tokenizer

from chat import tokens
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
