"""The chat-completion chunks of one choice, without a stack: where logprobs ride, and the
finish reasons of choices that ended together."""

import uuid

from chat import events
from chat.models import ChatJob
from chat.openai_stream import ChoiceStream


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
