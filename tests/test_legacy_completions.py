"""The legacy ``/v1/completions`` through the real ``openai`` package (``client.completions``), as
eval harnesses call it: a raw prompt continued without the chat template, on the real SmolLM2
for what the text means and on the demo model for the rest. Greedy and few tokens each."""

import math

import openai
import pytest
from django.conf import settings
from tokenizers import Tokenizer

from chat.models import ChatJob
from engine.model_files import model_dir

from .conftest import DEMO_MODEL, REAL_MODEL

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]

FRANCE = "The capital of France is"


@pytest.fixture
def client(live_server_url, key_a) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{live_server_url}/v1", api_key=key_a, max_retries=0)


@pytest.fixture
def real(real_model_worker, client) -> openai.OpenAI:
    return client


def complete(client, prompt=FRANCE, model=REAL_MODEL, **params):
    params = {"max_tokens": 8, "temperature": 0, **params}
    return client.completions.create(model=model, prompt=prompt, **params)


def streamed(client, **params) -> tuple[dict[int, str], dict[int, str], list]:
    """Each choice's streamed text and finish reason, and the chunks."""
    texts, reasons, chunks = {}, {}, list(complete(client, stream=True, **params))
    for chunk in chunks:
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + choice.text
            if choice.finish_reason:
                reasons[choice.index] = choice.finish_reason
    return texts, reasons, chunks


def test_it_continues_a_prompt_streamed_or_not(real):
    whole = complete(real)
    assert whole.object == "text_completion" and whole.id.startswith("cmpl-")
    (choice,) = whole.choices
    assert "Paris" in choice.text
    assert choice.finish_reason in ("stop", "length") and choice.logprobs is None
    usage = whole.usage
    assert 0 < usage.completion_tokens <= 8
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    job = ChatJob.objects.get(pk=whole.id.removeprefix("cmpl-"))
    assert job.session is None and job.params["prompt"] == FRANCE and job.output == choice.text

    texts, reasons, chunks = streamed(real, stream_options={"include_usage": True})
    assert texts == {0: choice.text} and reasons == {0: choice.finish_reason}
    assert {chunk.id for chunk in chunks} == {chunks[0].id}
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == usage.completion_tokens


def test_token_ids_are_the_same_prompt(real):
    location = model_dir(settings.AUTOGLM_MODELS[REAL_MODEL], settings.AUTOGLM_MODEL_CACHE)
    ids = Tokenizer.from_file(str(location / "tokenizer.json")).encode(FRANCE).ids
    by_text = complete(real)
    for prompt in (ids, [ids]):
        by_ids = complete(real, prompt=prompt)
        assert by_ids.choices[0].text == by_text.choices[0].text
        assert by_ids.usage.prompt_tokens == len(ids) == by_text.usage.prompt_tokens


def test_an_id_outside_the_vocabulary_is_a_400(real):
    with pytest.raises(openai.BadRequestError) as caught:
        complete(real, prompt=[1, 10**8])
    assert caught.value.type == "invalid_request_error"


def check_logprobs(logprobs, text: str, alternatives: int) -> None:
    assert "".join(logprobs.tokens) == text
    assert len(logprobs.token_logprobs) == len(logprobs.tokens) == len(logprobs.top_logprobs)
    assert all(lp <= 0 for lp in logprobs.token_logprobs)
    assert all(len(top) == alternatives for top in logprobs.top_logprobs)
    # Greedy: the token taken is the likeliest of its alternatives.
    for token, logprob, top in zip(
        logprobs.tokens, logprobs.token_logprobs, logprobs.top_logprobs, strict=True
    ):
        assert max(top.values()) == pytest.approx(logprob) and top.get(token) is not None
    starts = [len("".join(logprobs.tokens[:i])) for i in range(len(logprobs.tokens))]
    assert logprobs.text_offset == starts


def test_logprobs_in_the_completion_and_the_stream(real):
    whole = complete(real, logprobs=2)
    (choice,) = whole.choices
    check_logprobs(choice.logprobs, choice.text, 2)
    assert sum(math.exp(lp) for lp in choice.logprobs.token_logprobs) > 0

    tokens, offsets, lps = [], [], []
    for chunk in complete(real, logprobs=2, stream=True):
        for piece in chunk.choices:
            if piece.logprobs is not None:
                tokens += piece.logprobs.tokens
                offsets += piece.logprobs.text_offset
                lps += piece.logprobs.token_logprobs
    assert tokens == choice.logprobs.tokens and offsets == choice.logprobs.text_offset
    assert lps == pytest.approx(choice.logprobs.token_logprobs, abs=1e-4)


def test_n_choices(client):
    answer = complete(client, model=DEMO_MODEL, n=2, temperature=1.0, seed=7, best_of=2)
    assert [choice.index for choice in answer.choices] == [0, 1]
    assert all(choice.finish_reason in ("stop", "length") for choice in answer.choices)
    texts, reasons, _ = streamed(client, model=DEMO_MODEL, n=2, temperature=1.0, seed=7)
    assert texts == {choice.index: choice.text for choice in answer.choices}
    assert set(reasons) == {0, 1}


def test_max_tokens_defaults_to_16(client):
    answer = client.completions.create(model=DEMO_MODEL, prompt="Once upon a time", temperature=0)
    assert 0 < answer.usage.completion_tokens <= 16
    job = ChatJob.objects.get(pk=answer.id.removeprefix("cmpl-"))
    assert job.params["max_tokens"] == 16


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"echo": True}, "echo"),
        ({"suffix": " and so on."}, "suffix"),
        ({"prompt": ["one", "two"]}, "prompt"),
        ({"prompt": [[1, 2], [3]]}, "prompt"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": [2**40]}, "prompt"),  # beyond what a tokenizer decodes: was a 500
        ({"best_of": 3}, "best_of"),
        ({"logprobs": 6}, "logprobs"),
        ({"extra_body": {"top_logprobs": 2}}, "top_logprobs"),
        ({"extra_body": {"messages": []}}, "messages"),
    ],
)
def test_what_it_does_not_do_is_a_400_naming_the_field(client, params, param):
    with pytest.raises(openai.BadRequestError) as caught:
        complete(client, **{"model": DEMO_MODEL, **params})
    assert caught.value.param == param
    assert ChatJob.objects.count() == 0


def test_several_prompts_are_refused_in_words(client):
    with pytest.raises(openai.BadRequestError) as caught:
        complete(client, model=DEMO_MODEL, prompt=["one", "two"])
    assert "one prompt per request" in caught.value.message


def test_nulls_mean_the_defaults(client):
    answer = complete(
        client, model=DEMO_MODEL, echo=None, suffix=None, best_of=None, logprobs=None, n=None
    )
    assert len(answer.choices) == 1 and answer.choices[0].logprobs is None
