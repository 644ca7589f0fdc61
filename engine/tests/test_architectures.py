"""Many architectures through the engine: batched greedy output equals generate()'s token for token.

Tiny random models (engine/tests/architectures.py) in float32, loaded through
engine.registry.load_model. Several prompts at once, so short prompts are
packed into one prefill and decode is batched over rows of different
lengths; a small max_prefill_tokens splits the long prompts into chunks; the
sliding models' window (8) is shorter than most prompts and than every
prompt plus its answer, so it matters in packed and chunked prefill and in
decode.

The reference is plain ``model.generate`` on the same loaded model, with the
attention implementation transformers chose for it: sdpa for most, eager for
Gemma 2, whose modeling code declares sdpa unsupported (sdpa cannot soft-cap
attention logits; transformers' sdpa attention raises if asked to), so
generate()'s Gemma 2 answers do apply the soft-capping.
"""

from __future__ import annotations

import re

import pytest
import torch

from engine.engine import BatchingEngine
from engine.registry import LoadedModel, load_model
from engine.request import EngineRequest

from .architectures import FAMILIES, WINDOW, build_family

# Tokens "w0".."w255" in the decoded text, with or without spaces between them: some
# families' tokenizer classes (e.g. Qwen2's) rebuild the pipeline with a byte-level decoder.
_TOKEN = re.compile(r"w\d+")
MAX_TOKENS = 12
# 3 and 5 tokens: within the window; the rest longer; 30 and 45 are prefilled in chunks.
PROMPT_LENGTHS = (3, 5, 9, 30, 45)


def _prompts() -> list[list[int]]:
    generator = torch.Generator().manual_seed(1)
    return [torch.randint(1, 256, (n,), generator=generator).tolist() for n in PROMPT_LENGTHS]


def _load(tmp_path_factory: pytest.TempPathFactory, family: str) -> LoadedModel:
    path = build_family(tmp_path_factory.mktemp(family), family)
    return load_model(family, path, device="cpu", dtype="float32")


def _reference(loaded: LoadedModel, prompt: list[int], max_tokens: int = MAX_TOKENS) -> list[str]:
    input_ids = torch.tensor([prompt])
    with torch.inference_mode():
        output = loaded.model.generate(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            max_new_tokens=max_tokens,
            do_sample=False,
            pad_token_id=0,
        )
    return loaded.tokenizer.convert_ids_to_tokens(output[0, len(prompt) :].tolist())


def _served(loaded: LoadedModel, prompts: list[list[int]], **engine_kwargs) -> list[list[str]]:
    engine = BatchingEngine(loaded, **engine_kwargs)
    with engine:
        handles = [
            engine.submit(EngineRequest(prompt_ids=p, max_tokens=MAX_TOKENS, temperature=0))
            for p in prompts
        ]
        results = [h.result(timeout=60) for h in handles]
    return [_TOKEN.findall(r.text) for r in results]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_it_matches_generate_token_for_token(
    tmp_path_factory: pytest.TempPathFactory, family: str
) -> None:
    loaded = _load(tmp_path_factory, family)
    prompts = _prompts()
    expected = [_reference(loaded, p) for p in prompts]

    served = _served(loaded, prompts, max_batch_size=4, max_batch_tokens=64, max_prefill_tokens=16)

    assert served == expected
    assert all(len(tokens) == MAX_TOKENS for tokens in served)


def test_the_reference_for_gemma2_soft_caps_attention(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    loaded = _load(tmp_path_factory, "gemma2")

    assert loaded.model.config._attn_implementation == "eager"
    assert loaded.model.config.attn_logit_softcapping is not None


def test_the_window_changes_the_answer(tmp_path_factory: pytest.TempPathFactory) -> None:
    # Otherwise the sliding models above would pass with full attention too.
    loaded = _load(tmp_path_factory, "mistral")
    prompt = _prompts()[-1]
    windowed = _reference(loaded, prompt)

    loaded.model.config.sliding_window = None

    assert _reference(loaded, prompt) != windowed
    assert len(prompt) > WINDOW


@pytest.mark.parametrize("family", ["gemma2", "gemma3"])
def test_it_decodes_sliding_models_in_bfloat16_like_float32(
    tmp_path_factory: pytest.TempPathFactory, family: str
) -> None:
    # bfloat16 decode attention is the GEMV path (Gemma 3: float32 decodes with
    # sdpa), with the same windows and, for Gemma 2, soft-capping. Rounding may
    # flip a late token, so the first 8 of 12 are compared. (Gemma's answers stay
    # the same in bfloat16 for every seed tried; Mistral's and Qwen2's may not,
    # from the prompt's rounding on.)
    path = tmp_path_factory.mktemp(family)
    build_family(path, family)
    prompts = _prompts()[2:]
    kwargs = {"max_batch_size": 4, "max_prefill_tokens": 16}
    exact = _served(load_model(family, path, device="cpu", dtype="float32"), prompts, **kwargs)

    rounded = _served(load_model(family, path, device="cpu", dtype="bfloat16"), prompts, **kwargs)

    assert [tokens[:8] for tokens in rounded] == [tokens[:8] for tokens in exact]
