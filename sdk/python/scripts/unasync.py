"""Generate the synchronous client from the asyncio one: ``src/autoglm/_async/`` -> ``_sync/``.

The asyncio modules are the one truth, code and docstrings alike; their synchronous twins are made
by text substitution, as httpcore's ``scripts/unasync`` makes its ``_sync`` package. Run this after
an edit of an asyncio module::

    python sdk/python/scripts/unasync.py          # rewrite the synchronous modules
    python sdk/python/scripts/unasync.py --check  # exit 1 if one of them is out of date

``tests/test_package.py`` fails while a committed twin is out of date, and the build
(``setup.py``) writes fresh ones into the wheel.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "autoglm"
SOURCES = PACKAGE / "_async"
TARGETS = PACKAGE / "_sync"
# The first line of every asyncio module; its twin says where it comes from instead.
MARK = "# The source of its synchronous twin: edit this file, then run scripts/unasync.py.\n"

# Applied in order. Each must match in some module, so that no rule outlives its use.
RULES = [
    (r"\basyncio client\b", "synchronous client"),
    (r"^import asyncio$", "import time"),
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


def twins() -> dict[Path, Path]:
    """Each asyncio module and the synchronous one made from it."""
    return {source: TARGETS / source.name for source in sorted(SOURCES.glob("*.py"))}


def _sorted_names(match: re.Match[str]) -> str:
    names = match[2].split(", ")
    names.sort(key=lambda name: (not name.isupper(), not name[0].isupper(), name.lower()))
    return f"from {match[1]} import {', '.join(names)}"


def _tidy_imports(text: str) -> str:
    """Put imports back in ruff's order: a rename can unsort or repeat them."""
    text = re.sub(r"^from (\S+) import ([\w, ]+)$", _sorted_names, text, flags=re.MULTILINE)
    plain = re.compile(r"^(?:import \w+\n)+", flags=re.MULTILINE)
    return plain.sub(lambda block: "".join(sorted(set(block[0].splitlines(True)))), text, count=1)


def generate() -> dict[Path, str]:
    """The synchronous modules' sources, by path."""
    unused = {pattern for pattern, _ in RULES}
    generated = {}
    for source, target in twins().items():
        text = source.read_text(encoding="utf-8")
        if not text.startswith(MARK):
            raise ValueError(f"unasync: {source.name} does not begin with {MARK!r}")
        for pattern, replacement in RULES:
            text, count = re.subn(pattern, replacement, text, flags=re.MULTILINE)
            if count:
                unused.discard(pattern)
        origin = source.relative_to(PACKAGE)
        header = f"# Generated from {origin} by scripts/unasync.py: edit that file, then run it.\n"
        generated[target] = header + _tidy_imports(text.removeprefix(MARK))
    if unused:
        raise ValueError(f"unasync: these rules matched nothing: {sorted(unused)}")
    return generated


def main(argv: list[str]) -> int:
    generated = generate()
    stale = [
        target
        for target, text in generated.items()
        if not target.exists() or target.read_text(encoding="utf-8") != text
    ]
    if "--check" in argv:
        for target in stale:
            print(f"{target} is out of date: run {Path(__file__).name}", file=sys.stderr)
        return 1 if stale else 0
    TARGETS.mkdir(exist_ok=True)
    for target in stale:
        target.write_text(generated[target], encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
