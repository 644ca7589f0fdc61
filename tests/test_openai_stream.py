"""The chat-completion chunks of one choice, without a stack: where logprobs ride, and the
finish reasons of choices that ended together."""

import uuid

from chat import events
from chat.models import ChatJob
from chat.openai_stream import ChoiceStream
from chat.presenters import completion_choice


def entry(token: str) -> dict:
    return {"token": token, "logprob": -0.5, "bytes": list(token.encode()), "top_logprobs": []}


def test_logprobs_ride_on_the_delta_their_tokens_made():
    job = ChatJob(id=uuid.uuid4(), model="m", params={"logprobs": True})
    stream = ChoiceStream(job, 0)
    out = stream.feed("Hel", [entry("Hel")])  # held back: finish_reason may ride on it
    out += stream.feed("lo", [entry("lo")])
    out += stream.finish("stop")
    pieces = [
        (c["delta"].get("content"), [e["token"] for e in c["logprobs"]["content"]]) for c in out
    ]
    assert pieces == [("Hel", ["Hel"]), ("lo", ["lo"])]
    assert out[-1]["finish_reason"] == "stop"


def test_choices_that_ended_before_storing_any_all_end_the_same_way():
    # A job of n=3 cancelled while queued stores no choices; its done event has one reason.
    assert events.finish_reasons({"finish_reason": "cancelled"}, 3) == ["cancelled"] * 3
    done = {
        "finish_reason": "stop",
        "choices": [{"finish_reason": "stop"}, {"finish_reason": "length"}],
    }
    assert events.finish_reasons(done, 2) == ["stop", "length"]


TWO_CALLS = (
    '<tool_call>\n{"name": "a", "arguments": {}}\n</tool_call>\n'
    '<tool_call>\n{"name": "b", "arguments": {}}\n</tool_call>'
)


def test_without_parallel_tool_calls_only_the_first_call_is_given():
    tools = [{"type": "function", "function": {"name": n}} for n in ("a", "b")]
    for parallel, names in ((True, ["a", "b"]), (False, ["a"])):
        params = {"tools": tools, "tool_choice": "auto", "parallel_tool_calls": parallel}
        job = ChatJob(id=uuid.uuid4(), model="m", params=params, output=TWO_CALLS)
        body = completion_body_of(job)
        assert [c["function"]["name"] for c in body["message"]["tool_calls"]] == names
        stream = ChoiceStream(job, 0)
        out = stream.feed(TWO_CALLS, None) + stream.finish("stop")
        streamed = [c["function"]["name"] for o in out for c in o["delta"].get("tool_calls", ())]
        assert streamed == names and out[-1]["finish_reason"] == "tool_calls"


def completion_body_of(job: ChatJob) -> dict:
    stored = {"text": job.output, "finish_reason": "stop", "logprobs": None}
    return completion_choice(job, 0, stored)
