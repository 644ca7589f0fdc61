"""Hermes tool calls in a model's answer (chat/tool_calls.py): parsed into OpenAI's tool_calls,
malformed blocks left in the content, and streamed into chunk deltas that add up to the parse
however the answer is cut into pieces."""

import json
import random

import pytest

from chat.tool_calls import PARSERS, tool_call_text, tool_parser

WEATHER = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
TIME = '<tool_call>\n{"name": "get_time", "arguments": {"zone": "CET", "24h": true}}\n</tool_call>'

# Answers a model may write, each a case the parser must get right.
TEXTS = [
    "Hello there, no tools needed.",
    WEATHER,
    "Let me check.\n" + WEATHER,
    WEATHER + "\n" + TIME,
    "  \n" + WEATHER + "\n\nDone: <b>ok</b> \n",
    '<tool_call>\n{"name": "get_weather", "arguments": {"city": \n</tool_call>\n' + TIME,
    '<tool_call>\n{"arguments": {"city": "Paris"}}\n</tool_call>',
    '<tool_call>\n{"name": "search", "parameters": {"q": "a < b"}}\n</tool_call>',
    '<tool_call>\n{"name": "now"}\n</tool_call>',
    'Sure. <tool_call>\n{"name": "get_weather", "arguments": {"city": "Zürich"}}',
    'Sure. <tool_call>\n{"name": "get_weather", "arguments": {"city": "Zü',
    "a < b and <tool_ is not <tool_call",
    "x </tool_call> y <tool_call",
    '<tool_call>\n<tool_call>\n{"name": "f", "arguments": {}}\n</tool_call>',
    '<tool_call>["not", "an", "object"]</tool_call>text<tool_call>{"name": "f"}</tool_call>',
    '<tool_call>{"name": "f", "arguments": "{\\"x\\": 1}"}</tool_call>',
    "",
    "   \n ",
]


def _parse(text: str) -> tuple[str | None, list[dict]]:
    return tool_parser("hermes").parse(text, call_id_prefix="abc")


def _stream(pieces: list[str]) -> list[dict]:
    stream = tool_parser("hermes").stream("abc")
    deltas = [delta for piece in pieces for delta in stream.feed(piece)]
    return deltas + stream.finish()


def _merged(deltas: list[dict]) -> list[dict]:
    """Adjacent content deltas as one: what a client that joins them sees."""
    merged: list[dict] = []
    for delta in deltas:
        if "content" in delta and merged and "content" in merged[-1]:
            merged[-1] = {"content": merged[-1]["content"] + delta["content"]}
        else:
            merged.append(dict(delta))
    return merged


def _assembled(deltas: list[dict]) -> tuple[str | None, list[dict]]:
    """The message a client builds from the deltas, as parse() gives it."""
    content = "".join(delta.get("content", "") for delta in deltas)
    calls = []
    for delta in deltas:
        for call in delta.get("tool_calls", []):
            assert call["index"] == len(calls)
            calls.append({key: value for key, value in call.items() if key != "index"})
    return content or None, calls


def test_it_reads_a_call_and_the_text_before_it() -> None:
    content, calls = _parse("Let me check.\n" + WEATHER)

    assert content == "Let me check."
    assert calls == [
        {
            "id": "call_abc0",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
        }
    ]


def test_it_reads_parallel_calls_in_order_with_their_own_ids() -> None:
    content, calls = _parse(WEATHER + "\n" + TIME)

    assert content is None
    assert [call["id"] for call in calls] == ["call_abc0", "call_abc1"]
    assert [call["function"]["name"] for call in calls] == ["get_weather", "get_time"]
    assert json.loads(calls[1]["function"]["arguments"]) == {"zone": "CET", "24h": True}


def test_plain_text_is_content_only() -> None:
    assert _parse("Hello there, no tools needed.") == ("Hello there, no tools needed.", [])
    assert _parse("  \n ") == (None, [])


def test_a_malformed_block_stays_in_the_content() -> None:
    broken = '<tool_call>\n{"name": "get_weather", "arguments": {"city": \n</tool_call>'
    nameless = '<tool_call>\n{"arguments": {"city": "Paris"}}\n</tool_call>'

    content, calls = _parse(broken + "\n" + TIME)
    assert content == broken
    assert [call["function"]["name"] for call in calls] == ["get_time"]
    assert calls[0]["id"] == "call_abc0"
    assert _parse(nameless) == (nameless, [])
    assert _parse('<tool_call>["f"]</tool_call>') == ('<tool_call>["f"]</tool_call>', [])


def test_it_takes_parameters_for_arguments_and_no_arguments_as_none() -> None:
    _, calls = _parse('<tool_call>\n{"name": "search", "parameters": {"q": "a < b"}}\n</tool_call>')
    assert calls[0]["function"] == {"name": "search", "arguments": '{"q": "a < b"}'}

    _, calls = _parse('<tool_call>{"name": "now"}</tool_call>')
    assert calls[0]["function"] == {"name": "now", "arguments": "{}"}


def test_an_unclosed_last_block_counts_when_its_json_is_whole() -> None:
    content, calls = _parse('Sure. <tool_call>\n{"name": "f", "arguments": {"city": "Zürich"}}')
    assert content == "Sure."
    assert calls[0]["function"] == {"name": "f", "arguments": '{"city": "Zürich"}'}

    cut = 'Sure. <tool_call>\n{"name": "f", "arguments": {"city": "Zü'
    assert _parse(cut) == (cut, [])


def test_unknown_parsers_are_refused() -> None:
    assert set(PARSERS) == {"hermes"}
    with pytest.raises(ValueError, match="unknown tool-call parser 'mistral'"):
        tool_parser("mistral")


def test_the_stream_sends_text_at_once_and_each_call_when_it_closes() -> None:
    stream = tool_parser("hermes").stream("abc")

    assert stream.feed("Let me ") == [{"content": "Let me"}]
    assert stream.feed("check.\n<tool") == [{"content": " check."}]
    assert stream.feed('_call>\n{"name": "get_weather", ') == []
    assert stream.feed('"arguments": {"city": "Paris"}}\n</tool_') == []
    assert stream.feed("call>\n") == [
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "call_abc0",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ]
        }
    ]
    assert stream.finish() == []


def test_the_stream_releases_what_only_looked_like_a_tag() -> None:
    stream = tool_parser("hermes").stream("abc")

    assert stream.feed("a <tool") == [{"content": "a"}]
    assert stream.feed("box> b <") == [{"content": " <toolbox> b"}]
    assert stream.finish() == [{"content": " <"}]


@pytest.mark.parametrize("text", TEXTS)
def test_the_stream_adds_up_to_the_parse(text: str) -> None:
    assert _assembled(_stream([text])) == _parse(text)


@pytest.mark.parametrize("text", TEXTS)
def test_the_stream_is_the_same_however_the_text_is_cut(text: str) -> None:
    whole = _merged(_stream([text]))

    for cut in range(len(text) + 1):
        assert _merged(_stream([text[:cut], text[cut:]])) == whole, cut
    assert _merged(_stream(list(text))) == whole
    rng = random.Random(text)
    for _ in range(200):
        cuts = sorted(rng.sample(range(len(text) + 1), min(len(text) + 1, rng.randint(1, 8))))
        pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
        assert _merged(_stream(pieces)) == whole, pieces


def test_written_calls_read_back_as_the_same_calls() -> None:
    calls = [
        {
            "id": "call_x",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Zürich"}'},
        },
        {"id": "call_y", "type": "function", "function": {"name": "now", "arguments": "{}"}},
    ]

    text = tool_call_text(calls)

    assert text == (
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Zürich"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "now", "arguments": {}}\n</tool_call>'
    )
    content, parsed = _parse(text)
    assert content is None
    assert [call["function"] for call in parsed] == [call["function"] for call in calls]
    assert tool_call_text(parsed) == text


def test_arguments_that_are_not_json_are_written_as_a_string() -> None:
    calls = [{"type": "function", "function": {"name": "f", "arguments": "city=Paris"}}]

    assert tool_call_text(calls) == (
        '<tool_call>\n{"name": "f", "arguments": "city=Paris"}\n</tool_call>'
    )
