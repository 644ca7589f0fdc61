"""OpenAI's Responses API through the real ``openai`` package's ``responses`` client: text, a
three-turn chain through ``previous_response_id`` on the real SmolLM2, branching, streaming with
typed events, tools, ``store: false``, and what it refuses."""

import json

import openai
import pytest

from chat.models import ChatJob, ChatSession

from .conftest import REAL_MODEL

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Get the current weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


@pytest.fixture
def client(real_model_worker, live_server_url, key_a) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{live_server_url}/v1", api_key=key_a, max_retries=0)


def respond(client, input, **params):
    params = {"model": REAL_MODEL, "max_output_tokens": 24, "temperature": 0, **params}
    return client.responses.create(input=input, **params)


def test_a_three_turn_chain_through_previous_response_id(client):
    first = respond(client, "My name is Zork. Remember it.", instructions="Be brief.")
    assert first.status == "completed" and first.output_text
    assert first.id.startswith("resp_") and first.usage.input_tokens > 0

    second = respond(client, "What is the capital of France?", previous_response_id=first.id)
    assert "Paris" in second.output_text
    third = respond(client, "What is my name?", previous_response_id=second.id)
    assert "Zork" in third.output_text
    assert third.previous_response_id == second.id

    # One session holds the chain; each turn is a stored response, retrievable.
    assert ChatSession.objects.count() == 1
    assert client.responses.retrieve(third.id).output_text == third.output_text

    # Without the chain, the model does not know the name.
    alone = respond(client, "What is my name?")
    assert "Zork" not in alone.output_text


def test_chaining_from_an_earlier_turn_branches(client):
    first = respond(client, "My name is Zork.")
    respond(client, "Say hello.", previous_response_id=first.id)
    other = respond(client, "What is my name?", previous_response_id=first.id)
    assert "Zork" in other.output_text
    assert ChatSession.objects.count() == 2  # the second answer to `first` got its own branch


def test_a_streamed_response_sends_typed_events(client):
    whole = respond(client, "What is the capital of France?")
    stream = respond(client, "What is the capital of France?", stream=True)
    events = list(stream)
    types = [event.type for event in events]
    assert types[:2] == ["response.created", "response.in_progress"]
    assert types[-1] == "response.completed"
    assert "response.output_item.added" in types and "response.output_item.done" in types
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == whole.output_text
    assert events[-1].response.output_text == text
    assert [e.sequence_number for e in events] == list(range(len(events)))


def test_a_tool_call_and_its_result_through_the_chain(client):
    asked = respond(
        client,
        "What is the weather like in Paris today?",
        tools=[WEATHER],
        tool_choice={"type": "function", "name": "get_weather"},
        max_output_tokens=60,
    )
    (call,) = [item for item in asked.output if item.type == "function_call"]
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Paris"}

    result = {"type": "function_call_output", "call_id": call.call_id, "output": "21 C, sunny"}
    final = respond(client, [result], previous_response_id=asked.id, tools=[WEATHER])
    assert final.status == "completed"
    assert not [item for item in final.output if item.type == "function_call"]
    assert "21" in final.output_text


def test_the_sampling_extras_reach_the_job(client):
    answer = respond(client, "Hi", max_output_tokens=4, extra_body={"top_k": 1, "min_p": 0.1})
    job = ChatJob.objects.get(pk=answer.id.removeprefix("resp_"))
    assert job.params["top_k"] == 1 and job.params["min_p"] == 0.1


def test_a_deleted_response_is_gone(client):
    answer = respond(client, "Hi", max_output_tokens=4)
    client.responses.delete(answer.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(answer.id)
    with pytest.raises(openai.NotFoundError):
        respond(client, "Hi again", previous_response_id=answer.id)


def test_an_unstored_response_is_not_kept(client):
    answer = respond(client, "Hi", store=False)
    assert answer.status == "completed" and answer.store is False
    assert ChatSession.objects.count() == 0
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(answer.id)


def test_json_schema_through_text_format(client):
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
        "required": ["city", "country"],
    }
    answer = respond(
        client,
        "Name a city and its country, as JSON.",
        max_output_tokens=40,
        text={"format": {"type": "json_schema", "name": "place", "schema": schema, "strict": True}},
    )
    assert set(json.loads(answer.output_text)) == {"city", "country"}


def test_another_tenants_response_is_a_404(client, live_server_url, key_b):
    mine = respond(client, "Hi", max_output_tokens=4)
    other = openai.OpenAI(base_url=f"{live_server_url}/v1", api_key=key_b, max_retries=0)
    with pytest.raises(openai.NotFoundError):
        other.responses.retrieve(mine.id)
    with pytest.raises(openai.NotFoundError) as caught:
        respond(other, "Hi", previous_response_id=mine.id)
    assert caught.value.body["param"] == "previous_response_id"


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"reasoning": {"effort": "high"}}, "reasoning"),
        ({"max_tokens": 5}, "max_tokens"),
        ({"logprobs": True}, "logprobs"),  # not in its output: refused, not dropped
        ({"response_format": {"type": "json_object"}}, "response_format"),  # text.format here
        ({"input": [{"type": "image", "url": "x"}]}, "input"),
        ({"previous_response_id": "resp_nope"}, "previous_response_id"),
    ],
)
def test_what_it_does_not_take_is_a_400_or_404_naming_the_field(client, extra, param):
    with pytest.raises((openai.BadRequestError, openai.NotFoundError)) as caught:
        client.responses.create(model=REAL_MODEL, input="Hi", max_output_tokens=4, extra_body=extra)
    assert caught.value.body["param"].startswith(param)
