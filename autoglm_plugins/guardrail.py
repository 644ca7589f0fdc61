"""A guardrail: refuses requests that contain configured patterns, and masks others in the
requests and in the answers (streams too).

``AUTOGLM_PLUGIN_GUARDRAIL`` (JSON)::

    {"refuse": ["card"], "mask": ["email", "\\\\b\\\\d{3}-\\\\d{2}-\\\\d{4}\\\\b"],
     "mask_with": "[masked]"}

``refuse`` and ``mask`` list pattern names (``email``, ``card``) or regular expressions. A
request with a refused pattern in any message is answered 400 ``guardrail_refused``; masked
patterns are replaced in the messages before they are stored or prompted, and in the answer,
where the stage holds back the last few characters of each chunk until it knows whether they
start a match.
"""

from __future__ import annotations

import re

from autoglm_site.plugins import Admission, AnswerContext, AnswerStage, PluginRefusal

NAMED = {
    "email": r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}",
    # 13 to 19 digits, with single spaces or dashes between groups (card numbers).
    "card": r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)",
}
# An answer's text held back at most this long, while it could be the start of a match.
HOLD = 64


class Guardrail:
    name = "guardrail"

    def __init__(self) -> None:
        self.refuse: list[tuple[str, re.Pattern]] = []
        self.mask: list[re.Pattern] = []
        self.mask_with = "[masked]"

    def configure(self, config: dict) -> None:
        unknown = set(config) - {"refuse", "mask", "mask_with"}
        if unknown:
            raise ValueError(f"unknown options {sorted(unknown)}")
        self.refuse = [(p, _compile(p)) for p in _patterns(config, "refuse")]
        self.mask = [_compile(p) for p in _patterns(config, "mask")]
        self.mask_with = str(config.get("mask_with", self.mask_with))
        if not self.refuse and not self.mask:
            raise ValueError("needs 'refuse' or 'mask' patterns")

    def before_admission(self, admission: Admission) -> Admission:
        for message in admission.messages:
            for name, pattern in self.refuse:
                if pattern.search(message.get("content") or ""):
                    label = name if name in NAMED else "a refused pattern"
                    raise PluginRefusal(
                        f"The request contains content this service refuses ({label}).",
                        code="guardrail_refused",
                    )
        # An assistant message that only calls tools has no content to mask.
        admission.messages = [
            {**message, "content": self.masked(message["content"])}
            if message.get("content")
            else message
            for message in admission.messages
        ]
        return admission

    def answer_stage(self, answer: AnswerContext) -> AnswerStage | None:
        patterns = self.mask + [pattern for _, pattern in self.refuse]
        return _MaskingStage(patterns, self.mask_with) if patterns else None

    def masked(self, text: str) -> str:
        return _masked(text, self.mask, self.mask_with)


class _MaskingStage(AnswerStage):
    def __init__(self, patterns: list[re.Pattern], mask_with: str) -> None:
        self.patterns, self.mask_with = patterns, mask_with
        self.held = ""

    def feed(self, text: str) -> str:
        self.held += text
        cut = max(0, len(self.held) - HOLD)
        # Never cut inside a match: it could go on in the next chunk.
        for pattern in self.patterns:
            for match in pattern.finditer(self.held):
                if match.start() < cut < match.end():
                    cut = match.start()
        out, self.held = self.held[:cut], self.held[cut:]
        return _masked(out, self.patterns, self.mask_with)

    def finish(self) -> str:
        out, self.held = self.held, ""
        return _masked(out, self.patterns, self.mask_with)


def _masked(text: str, patterns: list[re.Pattern], mask_with: str) -> str:
    for pattern in patterns:
        text = pattern.sub(mask_with, text)
    return text


def _patterns(config: dict, key: str) -> list[str]:
    value = config.get(key, [])
    if not isinstance(value, list) or not all(isinstance(p, str) and p for p in value):
        raise ValueError(f"'{key}' must be a list of pattern names or regular expressions")
    return value


def _compile(pattern: str) -> re.Pattern:
    try:
        return re.compile(NAMED.get(pattern, pattern))
    except re.error as exc:
        raise ValueError(f"the pattern {pattern!r} is not a regular expression: {exc}") from exc
