"""Generate the synchronous client, ``src/autoglm/_client.py``, from the asyncio one.

``_async_client.py`` is the one truth, code and docstrings alike; its synchronous twin is made by
text substitution, as httpcore's ``scripts/unasync`` makes its sync package. Run this after an
edit of the asyncio client::

    python sdk/python/scripts/unasync.py          # rewrite _client.py
    python sdk/python/scripts/unasync.py --check  # exit 1 if _client.py is out of date

``tests/test_package.py`` fails while the committed file is out of date, and the build
(``setup.py``) writes a fresh one into the wheel.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[1] / "src" / "autoglm" / "_async_client.py"
TARGET = SOURCE.with_name("_client.py")

# Applied in order to the whole text. Each must match somewhere, so that no rule outlives its use.
RULES = [
    (
        r"^# The source of _client\.py.*$",
        "# Generated from _async_client.py by scripts/unasync.py: edit that file, then run it.",
    ),
    (r"\basyncio client\b", "synchronous client"),
    (r"^import asyncio\n", ""),
    (r"\basyncio\.sleep\b", "time.sleep"),
    (r"\bAsync([A-Z]\w*)", r"\1"),  # AsyncAutoGLMClient, AsyncIterator, httpx.AsyncClient...
    (r"\basync (def|for|with)\b", r"\1"),
    (r"\bawait ", ""),
    (r"\b__a(enter|exit|iter|next)__\b", r"__\1__"),
    (r"\ba(close|read|iter_lines)\b", r"\1"),
    # An async iterator cannot return a value; the synchronous stream returns its usage (so that
    # ``usage = yield from stream`` works).
    (r"\braise StopAsyncIteration\b", "raise StopIteration(self.usage)"),
    # Nor can an async generator ``yield from``.
    (r"^( *)for (\w+) in (.+):\n +yield \2$", r"\1yield from \3"),
]


def _sorted_names(match: re.Match[str]) -> str:
    """A one-line ``from x import a, b`` with its names in ruff's order (a rename can upset it)."""
    names = match[2].split(", ")
    names.sort(key=lambda name: (not name.isupper(), not name[0].isupper(), name.lower()))
    return f"from {match[1]} import {', '.join(names)}"


def generate() -> str:
    """The synchronous client's source, made from the asyncio client's."""
    text = SOURCE.read_text(encoding="utf-8")
    for pattern, replacement in RULES:
        text, count = re.subn(pattern, replacement, text, flags=re.MULTILINE)
        if not count:
            raise ValueError(f"unasync: the rule {pattern!r} matched nothing")
    return re.sub(r"^from (\S+) import ([\w, ]+)$", _sorted_names, text, flags=re.MULTILINE)


def main(argv: list[str]) -> int:
    text = generate()
    if "--check" not in argv:
        TARGET.write_text(text, encoding="utf-8")
    elif TARGET.read_text(encoding="utf-8") != text:
        print(f"{TARGET} is out of date: run {Path(__file__).name}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
