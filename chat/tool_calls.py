"""Tool calls in what a model writes: parsed into OpenAI's ``tool_calls``, whole or streamed.

A model taught the Hermes form (Hermes 2 Pro, Qwen 2.5 and later, the prompt of
workers/tool_prompts.py) calls a function by writing, after any text of its own, one or more::

    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>

``parse`` reads a finished answer; ``stream`` reads it piece by piece into the ``delta``
objects of ``chat.completion.chunk`` events, and what the stream sends adds up to what
``parse`` returns for the whole text, however the text was cut into pieces. A block whose
JSON does not parse, or that names no function, is left in the content as the model wrote it
(vLLM's hermes parser does the same), so nothing the model wrote is lost. ``tool_call_text``
goes the other way, for the history a model is shown.

Pure Python: both the web side and the worker import it.
"""

from __future__ import annotations

import json
import re
from typing import Any

OPEN = "<tool_call>"
CLOSE = "</tool_call>"
# A block, or at the very end an unclosed one (the model reached its end of text before
# writing the closing tag): its JSON may still be whole.
_BLOCK = re.compile(
    re.escape(OPEN) + r"(.*?)" + re.escape(CLOSE) + "|" + re.escape(OPEN) + r"(.*)\Z", re.S
)


def _decode_call(body: str) -> tuple[str, str] | None:
    """The ``(name, arguments JSON)`` a block's body holds, or None when it holds no call."""
    try:
        call = json.loads(body)
    except ValueError:
        return None
    if not isinstance(call, dict):
        return None
    name = call.get("name")
    if not isinstance(name, str) or not name:
        return None
    # Hermes says "arguments"; some models (and Llama 3's JSON form) say "parameters".
    arguments = call.get("arguments", call.get("parameters", {}))
    if isinstance(arguments, str):
        # Arguments already encoded as a JSON string, as OpenAI sends them: kept when they are
        # an object, so that the client can decode them the way it decodes ours.
        try:
            arguments = json.loads(arguments)
        except ValueError:
            return None
    if not isinstance(arguments, dict):
        return None
    # ensure_ascii=False: OpenAI and vLLM send non-ASCII arguments as they are, not \u-escaped.
    return name, json.dumps(arguments, ensure_ascii=False)


def _call(call_id_prefix: str, index: int, name: str, arguments: str) -> dict[str, Any]:
    return {
        "id": f"call_{call_id_prefix}{index}",
        "type": "function",
        "function": {"name": name, "arguments": arguments},
    }


class HermesToolParser:
    """Hermes ``<tool_call>`` blocks (see the module docstring)."""

    name = "hermes"

    def parse(self, text: str, *, call_id_prefix: str) -> tuple[str | None, list[dict[str, Any]]]:
        """The content outside the tool-call blocks (stripped; None when nothing is left) and
        the calls, in OpenAI's ``tool_calls`` shape, ids ``call_<prefix><index>``."""
        content: list[str] = []
        calls: list[dict[str, Any]] = []
        position = 0
        for match in _BLOCK.finditer(text):
            content.append(text[position : match.start()])
            position = match.end()
            body = match.group(1) if match.group(1) is not None else match.group(2)
            decoded = _decode_call(body)
            if decoded is None:
                content.append(match.group(0))
            else:
                calls.append(_call(call_id_prefix, len(calls), *decoded))
        content.append(text[position:])
        return "".join(content).strip() or None, calls

    def stream(self, call_id_prefix: str) -> HermesToolStream:
        """A parser of one answer's text as it streams; see HermesToolStream."""
        return HermesToolStream(call_id_prefix)


class HermesToolStream:
    """One answer's text fed piece by piece, read into ``chat.completion.chunk`` deltas.

    ``feed`` returns what can be sent so far: ``{"content": ...}`` for text, and, when a
    block's closing tag arrives, one ``{"tool_calls": [{"index", "id", "type", "function":
    {"name", "arguments"}}]}`` with the whole call (arguments as their full JSON string).
    ``finish`` sends what was held back. Text that may be the start of ``<tool_call>`` is held
    until it turns out to be or not to be; whitespace is held until more text follows it, as
    ``parse`` strips the content at both ends.
    """

    def __init__(self, call_id_prefix: str) -> None:
        self._prefix = call_id_prefix
        self._buffer = ""  # text not yet sent: a possible opening tag's start, or a block's body
        self._in_block = False
        self._searched = 0  # how much of a block's body is known to hold no closing tag
        self._calls = 0
        self._started = False  # any content sent (leading whitespace is dropped until then)
        self._spaces = ""  # trailing whitespace of the content, held until more content follows
        self._finished = False

    def feed(self, text: str) -> list[dict[str, Any]]:
        """The deltas that ``text``, following what came before, makes sendable."""
        if self._finished:
            raise RuntimeError("feed() after finish()")
        self._buffer += text
        deltas: list[dict[str, Any]] = []
        while True:
            if self._in_block:
                end = self._buffer.find(CLOSE, self._searched)
                if end < 0:
                    # A closing tag may straddle this piece and the next.
                    self._searched = max(0, len(self._buffer) - len(CLOSE) + 1)
                    return deltas
                body, self._buffer = self._buffer[:end], self._buffer[end + len(CLOSE) :]
                self._in_block, self._searched = False, 0
                deltas += self._block(body, OPEN + body + CLOSE)
                continue
            start = self._buffer.find(OPEN)
            if start >= 0:
                deltas += self._content(self._buffer[:start])
                self._buffer = self._buffer[start + len(OPEN) :]
                self._in_block = True
                continue
            keep = _partial_open(self._buffer)
            deltas += self._content(self._buffer[: len(self._buffer) - keep])
            self._buffer = self._buffer[len(self._buffer) - keep :]
            return deltas

    def finish(self) -> list[dict[str, Any]]:
        """The deltas held back at the end of the text: an unclosed last block (a call when its
        JSON is whole), or the start of a tag that never came."""
        if self._finished:
            return []
        self._finished = True
        rest, self._buffer = self._buffer, ""
        if self._in_block:
            return self._block(rest, OPEN + rest)
        return self._content(rest)  # trailing whitespace stays held, so it is dropped

    def _block(self, body: str, written: str) -> list[dict[str, Any]]:
        decoded = _decode_call(body)
        if decoded is None:
            return self._content(written)
        call = _call(self._prefix, self._calls, *decoded)
        call = {"index": self._calls, **call}
        self._calls += 1
        return [{"tool_calls": [call]}]

    def _content(self, text: str) -> list[dict[str, Any]]:
        text = self._spaces + text
        if not self._started:
            text = text.lstrip()
        sent = text.rstrip()
        self._spaces = text[len(sent) :]
        if not sent:
            return []
        self._started = True
        return [{"content": sent}]


def _partial_open(text: str) -> int:
    """The length of the longest end of ``text`` that could begin an opening tag."""
    for length in range(min(len(OPEN) - 1, len(text)), 0, -1):
        if OPEN.startswith(text[-length:]):
            return length
    return 0


DEFAULT_TOOL_PARSER = "hermes"  # for a model AUTOGLM_TOOL_PARSERS does not name
PARSERS: dict[str, type] = {HermesToolParser.name: HermesToolParser}


def tool_parser(name: str) -> HermesToolParser:
    """The tool-call parser called ``name`` (one of PARSERS); ValueError for another name."""
    try:
        return PARSERS[name]()
    except KeyError:
        known = ", ".join(sorted(PARSERS))
        raise ValueError(f"unknown tool-call parser {name!r} (known: {known})") from None


class FirstCallOnly:
    """A parser whose calls are cut to the first (``parallel_tool_calls: false``): OpenAI then
    gives one call, so later ones the model wrote are dropped, whole or streamed."""

    def __init__(self, parser: HermesToolParser) -> None:
        self._parser = parser

    def parse(self, text: str, *, call_id_prefix: str) -> tuple[str | None, list[dict[str, Any]]]:
        content, calls = self._parser.parse(text, call_id_prefix=call_id_prefix)
        return content, calls[:1]

    def stream(self, call_id_prefix: str) -> _FirstCallStream:
        return _FirstCallStream(self._parser.stream(call_id_prefix))


class _FirstCallStream:
    def __init__(self, stream: HermesToolStream) -> None:
        self._stream = stream

    def feed(self, text: str) -> list[dict[str, Any]]:
        return self._first(self._stream.feed(text))

    def finish(self) -> list[dict[str, Any]]:
        return self._first(self._stream.finish())

    @staticmethod
    def _first(deltas: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [d for d in deltas if all(c["index"] == 0 for c in d.get("tool_calls", ()))]


def tool_call_text(calls: list[dict[str, Any]]) -> str:
    """OpenAI ``tool_calls`` of an assistant message written back as the Hermes blocks a model
    would have written for them (one per line; the form chat/grammars.py makes a model write).

    Arguments are shown as the JSON object they encode; arguments that are not JSON (only a
    client can send those) are shown as the string they are.
    """
    blocks = []
    for call in calls:
        function = call.get("function") or {}
        arguments: Any = function.get("arguments", {})
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments) if arguments.strip() else {}
            except ValueError:
                pass
        call_json = json.dumps(
            {"name": function.get("name"), "arguments": arguments}, ensure_ascii=False
        )
        blocks.append(f"{OPEN}\n{call_json}\n{CLOSE}")
    return "\n".join(blocks)
