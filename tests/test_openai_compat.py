"""The real `openai` package against the running stack: only base_url and api_key change."""

import asyncio
import uuid

import openai
import pytest

from chat.models import ChatJob

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]

MODEL = "autoglm-demo"
HELLO = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Say something about Python."},
]


@pytest.fixture
def client(live_server_url, key_a) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{live_server_url}/v1", api_key=key_a, max_retries=0)


@pytest.fixture
def aclient(live_server_url, key_a) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{live_server_url}/v1", api_key=key_a, max_retries=0)


def test_it_answers_a_completion(client):
    response = client.chat.completions.create(
        model=MODEL, messages=HELLO, max_tokens=12, temperature=0
    )
    assert response.object == "chat.completion"
    assert response.id.startswith("chatcmpl-")
    assert response.model == MODEL
    choice = response.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content
    assert choice.finish_reason in ("stop", "length")
    usage = response.usage
    assert usage.prompt_tokens > 0 and 0 < usage.completion_tokens <= 12
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    job = ChatJob.objects.get(pk=response.id.removeprefix("chatcmpl-"))
    assert job.status == "succeeded" and job.output == choice.message.content
    assert job.session is None


def test_it_streams_the_same_answer_with_usage(client):
    whole = client.chat.completions.create(
        model=MODEL, messages=HELLO, max_tokens=24, temperature=0
    )
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=HELLO,
            max_tokens=24,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert len({c.id for c in chunks}) == 1 and len({c.created for c in chunks}) == 1
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    content_chunks = [c for c in chunks if c.choices]
    text = "".join(c.choices[0].delta.content or "" for c in content_chunks)
    assert text == whole.choices[0].message.content
    assert content_chunks[0].choices[0].delta.role == "assistant"
    # finish_reason rides on the last content chunk only.
    assert [c.choices[0].finish_reason for c in content_chunks][-1] == whole.choices[
        0
    ].finish_reason
    assert all(c.choices[0].finish_reason is None for c in content_chunks[:-1])
    usage_chunk = chunks[-1]
    assert usage_chunk.choices == []
    assert usage_chunk.usage.completion_tokens == whole.usage.completion_tokens
    assert usage_chunk.usage.prompt_tokens == whole.usage.prompt_tokens


def test_it_sends_no_usage_chunk_unless_asked(client):
    chunks = list(
        client.chat.completions.create(
            model=MODEL, messages=HELLO, max_tokens=4, temperature=0, stream=True
        )
    )
    assert all(c.choices for c in chunks) and all(c.usage is None for c in chunks)


def test_it_cuts_the_answer_at_a_stop_sequence(client):
    free = (
        client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=40, temperature=0)
        .choices[0]
        .message.content
    )
    start = next(i for i in range(8, len(free) - 3) if free.find(free[i : i + 3]) == i)
    stop = free[start : start + 3]
    cut = client.chat.completions.create(
        model=MODEL,
        messages=HELLO,
        max_tokens=40,
        temperature=0,
        stop=[stop, "never-in-this-answer"],
    )
    assert cut.choices[0].message.content == free[:start]
    assert cut.choices[0].finish_reason == "stop"
    streamed = "".join(
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(
            model=MODEL, messages=HELLO, max_tokens=40, temperature=0, stop=stop, stream=True
        )
        if c.choices
    )
    assert streamed == free[:start]


def test_it_reproduces_a_sample_with_the_same_seed(client):
    def sample(seed):
        return (
            client.chat.completions.create(
                model=MODEL, messages=HELLO, max_tokens=16, temperature=1.0, seed=seed
            )
            .choices[0]
            .message.content
        )

    first, again, other = sample(1234), sample(1234), sample(98765)
    assert first == again
    assert first != other


def test_it_limits_the_answer_with_max_completion_tokens(client):
    response = client.chat.completions.create(
        model=MODEL, messages=HELLO, max_completion_tokens=3, temperature=0
    )
    assert response.usage.completion_tokens <= 3


def test_it_works_with_the_async_client(aclient):
    async def run():
        response = await aclient.chat.completions.create(
            model=MODEL, messages=HELLO, max_tokens=8, temperature=0
        )
        stream = await aclient.chat.completions.create(
            model=MODEL, messages=HELLO, max_tokens=8, temperature=0, stream=True
        )
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        await aclient.close()
        return response.choices[0].message.content, text

    whole, streamed = asyncio.run(run())
    assert whole and whole == streamed


def test_it_lists_models(client):
    models = client.models.list()
    assert MODEL in [m.id for m in models.data]
    assert client.models.retrieve(MODEL).id == MODEL
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")


def test_it_maps_errors_to_openai_exceptions(client, live_server_url):
    bad_key = openai.OpenAI(base_url=f"{live_server_url}/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as auth:
        bad_key.chat.completions.create(model=MODEL, messages=HELLO)
    assert auth.value.code == "invalid_api_key"
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model=MODEL, messages=HELLO, temperature=5)
    assert bad.value.param == "temperature"
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="gpt-9", messages=HELLO)
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as empty:
        client.chat.completions.create(model=MODEL, messages=[])
    assert empty.value.param == "messages"
    with pytest.raises(openai.BadRequestError) as streamed_bad:
        client.chat.completions.create(model=MODEL, messages=HELLO, top_p=0, stream=True)
    assert streamed_bad.value.param == "top_p"
    with pytest.raises(openai.BadRequestError) as nul:
        client.chat.completions.create(model=MODEL, messages=HELLO, stop=["a\x00"])
    assert nul.value.param == "stop"
    assert ChatJob.objects.count() == 0


def test_it_reports_a_prompt_that_does_not_fit_as_a_bad_request(client):
    with pytest.raises(openai.BadRequestError) as too_long:
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "word " * 3000}], max_tokens=8
        )
    assert too_long.value.code == "context_length_exceeded"


def test_it_reports_the_prompt_tokens_its_prefix_cache_held(live_server_url, key_a, key_b):
    def ask(key: str, messages: list[dict]):
        client = openai.OpenAI(base_url=f"{live_server_url}/v1", api_key=key, max_retries=0)
        return client.chat.completions.create(
            model=MODEL, messages=messages, max_tokens=4, temperature=0
        )

    # A system prompt no earlier test sent, long enough for several 32-token blocks.
    system = {"role": "system", "content": f"{uuid.uuid4()} You are terse. " + "Be brief. " * 30}
    first_turn = [system, {"role": "user", "content": "Name a colour."}]
    first = ask(key_a, first_turn)
    second_turn = [
        *first_turn,
        {"role": "assistant", "content": first.choices[0].message.content},
        {"role": "user", "content": "Another one."},
    ]
    second = ask(key_a, second_turn)
    other_tenant = ask(key_b, second_turn)

    assert first.usage.prompt_tokens_details.cached_tokens == 0
    cached = second.usage.prompt_tokens_details.cached_tokens
    assert cached >= 64 and cached % 32 == 0 and cached < second.usage.prompt_tokens
    assert other_tenant.usage.prompt_tokens_details.cached_tokens == 0  # its own cache only
    assert other_tenant.choices[0].message.content == second.choices[0].message.content
    job = ChatJob.objects.get(pk=second.id.removeprefix("chatcmpl-"))
    assert job.cached_tokens == cached
