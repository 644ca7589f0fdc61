"""Search across an organisation's conversations: their titles and every message, on every
branch, archived conversations included (and marked).

On PostgreSQL a hit is a full-text match (``websearch_to_tsquery``: words in any order,
``"a phrase"``, ``or``, ``-word``), ranked by ``ts_rank``, or a plain substring match of the
whole query, so that partial words and code (``get_user(``, ``0x1f``) are found too. The
text-search configuration is ``simple``: it lowercases words and nothing more. An organisation
chats in any language and pastes code; ``english`` would stem other languages' words and
identifiers into nonsense and drop stop words (so "to be or not to be" searched nothing), and
the substring match already finds a word's longer forms. Migration 0014 indexes both
sides of the match, messages and titles: GIN of ``to_tsvector('simple', ...)``, and trigram
GIN of ``UPPER(...)`` where ``pg_trgm`` may be installed. Elsewhere (the embedded SQLite of
``make run``) the substring match alone serves, by scanning.

Snippets are plain text with the matches given as ``[start, end)`` offsets in Unicode code
points (Python's string indexes; ``Array.from(text)`` in a browser): a client never needs to
render stored text as HTML.
"""

import re
from dataclasses import dataclass
from datetime import datetime

from django.contrib.postgres.search import SearchQuery, SearchRank, SearchVector
from django.db import connection
from django.db.models import Case, F, FloatField, Q, QuerySet, Value, When

from autoglm_site.errors import InvalidRequestError
from tenants.models import Tenant

from .models import ChatSession, Message

MAX_QUERY_CHARS = 200
SNIPPET_CHARS = 160  # about two lines of the results list
SNIPPET_BEFORE = 40  # context kept before the first match
CONFIG = "simple"
# A whole-query substring match ranks above a full-text match of scattered words, and a
# conversation whose title matches above one of its messages: ``ts_rank`` is mostly below 0.1.
SUBSTRING_BONUS = 0.1
TITLE_BONUS = 0.2

_WORD = re.compile(r"\w[\w.'-]*\w|\w", re.UNICODE)
_SPACE = re.compile(r"\s+")
_PHRASE = re.compile(r'"([^"]+)"')
_WEBSEARCH_NOISE = {"or", "and", "not"}


@dataclass(frozen=True)
class Hit:
    session_id: object
    session_title: str
    archived: bool
    message_id: object | None  # None: the conversation's title matched
    role: str | None
    snippet: str
    highlights: list[tuple[int, int]]
    created_at: datetime
    score: float


def search_query_clean(q: str | None) -> str:
    """The query to search for: ``q`` stripped; empty or longer than 200 characters is a 400."""
    text = (q or "").strip()
    if not text:
        raise InvalidRequestError("Give the text to search for in q.", param="q")
    if len(text) > MAX_QUERY_CHARS:
        raise InvalidRequestError(
            f"q is {len(text)} characters long; search for at most {MAX_QUERY_CHARS}.", param="q"
        )
    return text


def query_terms(q: str) -> list[str]:
    """What to highlight for ``q``: the whole query, its quoted phrases, then its words.

    The words are those of a web-search query: quotes are dropped, and so are an excluded
    word (``-word`` is what a hit does not contain) and the operator ``or``.
    """
    candidates = [q.strip(), *_PHRASE.findall(q)]
    words = []
    for raw in q.split():
        if raw.startswith("-") and len(raw) > 1:
            continue
        words += [w for w in _WORD.findall(raw) if w.lower() not in _WEBSEARCH_NOISE]
    candidates += sorted(words, key=len, reverse=True)
    terms: list[str] = []
    for term in candidates:
        if term and all(term.lower() != t.lower() for t in terms):
            terms.append(term)
    return terms


def match_ranges(text: str, terms: list[str]) -> list[tuple[int, int]]:
    """Every case-insensitive occurrence of any term in ``text``, as sorted, merged
    ``[start, end)`` ranges."""
    found = []
    for term in terms:
        found += [m.span() for m in re.finditer(re.escape(term), text, re.IGNORECASE)]
    merged: list[tuple[int, int]] = []
    for start, end in sorted(found):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def snippet(text: str, terms: list[str], width: int = SNIPPET_CHARS) -> tuple[str, list]:
    """A short excerpt of ``text`` from a little before its first match, on one line, with the
    ranges of the matches in it (offsets into the excerpt). ``…`` marks text cut at either end."""
    flat = _SPACE.sub(" ", text).strip()
    ranges = match_ranges(flat, terms)
    start = 0
    # Short context before the first match, even in a text that would fit whole: a results
    # list shows a snippet's first two lines or so, and the match must be in them.
    if ranges and ranges[0][0] > SNIPPET_BEFORE:
        first = ranges[0][0]
        start = first - SNIPPET_BEFORE
        if flat[start - 1] != " ":  # begin at a word, unless that loses the match
            space = flat.find(" ", start, first)
            start = space + 1 if space != -1 else start
    end = min(len(flat), start + width)
    if end < len(flat):
        space = flat.rfind(" ", start, end)
        if space > start + width // 2:
            end = space
    head = "…" if start > 0 else ""
    tail = "…" if end < len(flat) else ""
    excerpt = head + flat[start:end] + tail
    shift = len(head) - start
    inside = [
        (max(s, start) + shift, min(e, end) + shift) for s, e in ranges if s < end and e > start
    ]
    return excerpt, inside


def full_text_available() -> bool:
    return connection.vendor == "postgresql"


def _scored(rows: QuerySet, field: str, q: str, *, full_text: bool, bonus: float) -> QuerySet:
    """``rows`` whose ``field`` matches ``q``, each with its ``score`` (higher is better)."""
    substring = Q(**{f"{field}__icontains": q})
    if not full_text:
        return rows.filter(substring).annotate(score=Value(bonus, FloatField()))
    vector = SearchVector(field, config=CONFIG)
    query = SearchQuery(q, config=CONFIG, search_type="websearch")
    return (
        rows.alias(document=vector)  # in the WHERE and the rank, not sent back
        .filter(Q(document=query) | substring)
        .annotate(
            score=SearchRank(F("document"), query)
            + Case(When(substring, then=Value(SUBSTRING_BONUS)), default=Value(0.0))
            + Value(bonus, FloatField())
        )
    )


def search(*, tenant: Tenant, q: str, limit: int = 20, full_text: bool | None = None) -> list[Hit]:
    """The tenant's conversations and messages that match ``q``, best first, then newest.

    ``q`` is cleaned by ``search_query_clean`` (a 400 if empty or too long). ``full_text``
    defaults to whether the database is PostgreSQL; False searches substrings only.
    """
    q = search_query_clean(q)
    if full_text is None:
        full_text = full_text_available()
    order = ("-score", "-created_at", "-id")
    messages = _scored(
        Message.objects.filter(tenant=tenant).select_related("session"),
        "content",
        q,
        full_text=full_text,
        bonus=0.0,
    ).order_by(*order)[:limit]
    sessions = _scored(
        ChatSession.objects.filter(tenant=tenant),
        "title",
        q,
        full_text=full_text,
        bonus=TITLE_BONUS,
    ).order_by(*order)[:limit]
    terms = query_terms(q)
    hits = [_title_hit(s, terms) for s in sessions] + [_message_hit(m, terms) for m in messages]
    hits.sort(key=lambda h: (h.score, h.created_at), reverse=True)
    return hits[:limit]


def _title_hit(session: ChatSession, terms: list[str]) -> Hit:
    text, ranges = snippet(session.title, terms)
    return Hit(
        session_id=session.id,
        session_title=session.title,
        archived=session.archived,
        message_id=None,
        role=None,
        snippet=text,
        highlights=ranges,
        created_at=session.created_at,
        score=float(session.score),
    )


def _message_hit(message: Message, terms: list[str]) -> Hit:
    text, ranges = snippet(message.content, terms)
    return Hit(
        session_id=message.session_id,
        session_title=message.session.title,
        archived=message.session.archived,
        message_id=message.id,
        role=message.role,
        snippet=text,
        highlights=ranges,
        created_at=message.created_at,
        score=float(message.score),
    )
