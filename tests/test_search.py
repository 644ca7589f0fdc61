"""Search across the organisation's conversations: GET /api/v1/search (chat/search.py)."""

import os
import subprocess
import sys
from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone

from chat import search
from chat.models import ChatSession, Message
from tests.browser import ROOT

db = pytest.mark.django_db


def conversation(tenant, title, *texts, archived=False):
    """A session whose messages alternate user, assistant, each following the one before."""
    session = ChatSession.objects.create(
        tenant=tenant, model="autoglm-demo", title=title, archived=archived
    )
    parent = None
    for i, text in enumerate(texts):
        parent = Message.objects.create(
            tenant=tenant,
            session=session,
            parent=parent,
            role="user" if i % 2 == 0 else "assistant",
            content=text,
        )
    session.current_message = parent
    session.save(update_fields=["current_message"])
    return session


def found(client, q, **params):
    response = client.get("/api/v1/search", {"q": q, **params})
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["object"] == "list"
    return body["data"]


def marked(hit) -> list[str]:
    """The highlighted parts of a hit's snippet, as a browser cuts them (by code point)."""
    chars = list(hit["snippet"])
    return ["".join(chars[start:end]) for start, end in hit["highlights"]]


def error_of(response, status=400) -> dict:
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


# --- The API ----------------------------------------------------------------------------------


@db
def test_it_finds_a_message_in_another_conversation(client_a, tenant_a):
    conversation(tenant_a, "Groceries", "Buy milk", "Noted.")
    trip = conversation(
        tenant_a,
        "Holiday",
        "Where should we go in June?",
        "Consider the Faroe Islands: cliffs, puffins and very few crowds in early summer.",
    )
    hits = found(client_a, "puffins")
    assert len(hits) == 1
    hit = hits[0]
    answer = trip.messages.get(role="assistant")
    assert hit["object"] == "chat.search_hit"
    assert hit["session_id"] == str(trip.id)
    assert hit["session_title"] == "Holiday"
    assert hit["message_id"] == str(answer.id)
    assert hit["role"] == "assistant"
    assert hit["archived"] is False
    assert "puffins" in hit["snippet"]
    assert marked(hit) == ["puffins"]
    assert hit["created_at"].startswith(str(answer.created_at.date()))


@db
def test_it_finds_a_title(client_a, tenant_a):
    session = conversation(tenant_a, "Quarterly budget review", "Hello")
    hits = found(client_a, "budget")
    assert [(h["session_id"], h["message_id"], h["role"]) for h in hits] == [
        (str(session.id), None, None)
    ]
    assert hits[0]["snippet"] == "Quarterly budget review"
    assert marked(hits[0]) == ["budget"]


@db
def test_it_never_shows_another_organisations_conversations(client_a, client_b, tenant_a, tenant_b):
    conversation(tenant_a, "Zanzibar plans", "Flights to Zanzibar?")
    theirs = conversation(tenant_b, "B's Zanzibar", "Zanzibar is B's secret.")
    ours = found(client_a, "zanzibar")
    assert len(ours) == 2
    assert str(theirs.id) not in {h["session_id"] for h in ours}
    assert all("secret" not in h["snippet"] for h in ours)
    assert {h["session_id"] for h in found(client_b, "zanzibar")} == {str(theirs.id)}
    Message.objects.filter(tenant=tenant_b).delete()
    ChatSession.objects.filter(tenant=tenant_b).delete()
    assert found(client_b, "zanzibar") == []


@db
def test_it_searches_archived_conversations_and_marks_them(client_a, tenant_a):
    old = conversation(tenant_a, "Old", "The walrus protocol", archived=True)
    hits = found(client_a, "walrus")
    assert [(h["session_id"], h["archived"]) for h in hits] == [(str(old.id), True)]


@db
def test_it_searches_every_branch(client_a, tenant_a):
    session = conversation(tenant_a, "Poem", "Write a poem", "Roses are red, violets blue.")
    first = session.messages.get(role="user")
    # A regenerated answer: a sibling of the first one; the session shows the new one.
    newer = Message.objects.create(
        tenant=tenant_a,
        session=session,
        parent=first,
        role="assistant",
        content="Violets are a shade of blue.",
    )
    session.current_message = newer
    session.save(update_fields=["current_message"])
    hits = found(client_a, "violets")
    assert {h["message_id"] for h in hits} == {
        str(m.id) for m in session.messages.filter(role="assistant")
    }


@db
def test_it_finds_partial_words_and_code(client_a, tenant_a):
    conversation(
        tenant_a,
        "Debugging",
        "Why does user = get_user(request.auth) fail on kubernetes?",
    )
    assert marked(found(client_a, "kuber")[0]) == ["kuber"]
    assert marked(found(client_a, "get_user(request")[0]) == ["get_user(request"]
    assert found(client_a, "KUBERNETES")[0]["role"] == "user"


@pytest.mark.skipif("os.environ.get('DATABASE_URL', '').startswith('sqlite')")
@db
def test_it_takes_web_search_syntax_on_postgresql(client_a, tenant_a):
    prod = conversation(tenant_a, "", "We deploy the cluster on Fridays")
    staging = conversation(tenant_a, "", "We deploy the staging cluster daily")
    either = found(client_a, "cluster deploy")  # words in any order
    assert {h["session_id"] for h in either} == {str(prod.id), str(staging.id)}
    assert marked(either[0]) == ["deploy", "cluster"]
    assert [h["session_id"] for h in found(client_a, "deploy -staging")] == [str(prod.id)]
    assert {h["session_id"] for h in found(client_a, "fridays or daily")} == {
        str(prod.id),
        str(staging.id),
    }
    assert found(client_a, '"cluster deploy"') == []  # a phrase keeps its order


@db
def test_it_puts_the_best_matches_first_then_the_newest(client_a, tenant_a):
    now = timezone.now()
    older = conversation(tenant_a, "", "A note on lighthouses")
    newer = conversation(tenant_a, "", "Another note on lighthouses")
    titled = conversation(tenant_a, "Lighthouses", "Hello")
    Message.objects.filter(session=older).update(created_at=now - timedelta(days=2))
    Message.objects.filter(session=newer).update(created_at=now - timedelta(days=1))
    ChatSession.objects.filter(pk=titled.pk).update(created_at=now - timedelta(days=9))
    hits = found(client_a, "lighthouses")
    assert [h["session_id"] for h in hits] == [str(titled.id), str(newer.id), str(older.id)]
    assert len(found(client_a, "lighthouses", limit=2)) == 2


@db
def test_it_returns_stored_html_as_plain_text(client_a, tenant_a):
    hostile = '<img src=x onerror="alert(1)"> marzipan <b>bold</b>'
    conversation(tenant_a, "", hostile)
    hit = found(client_a, "marzipan")[0]
    assert hit["snippet"] == hostile  # as stored: the client sets it as text
    assert marked(hit) == ["marzipan"]


@db
def test_it_answers_a_signed_in_user_and_refuses_anonymous_callers(tenant_a, tenant_b):
    conversation(tenant_a, "Tea", "Oolong or sencha?")
    conversation(tenant_b, "Tea of B", "Sencha of B")
    browser = Client()
    assert browser.login(username="alice", password="alice-pw")
    hits = browser.get("/api/v1/search", {"q": "sencha"}).json()["data"]
    assert [h["session_title"] for h in hits] == ["Tea"]
    assert error_of(Client().get("/api/v1/search", {"q": "sencha"}), 401)["code"]


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({}, "q"),
        ({"q": ""}, "q"),
        ({"q": "   "}, "q"),
        ({"q": "x" * 201}, "q"),
        ({"q": "tea", "limit": "0"}, "limit"),
        ({"q": "tea", "limit": "51"}, "limit"),
        ({"q": "tea", "limit": "many"}, "limit"),
    ],
)
@db
def test_it_refuses_a_bad_query(client_a, params, param):
    error = error_of(client_a.get("/api/v1/search", params))
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param


@pytest.mark.parametrize(
    "q", ['"', "-", "or", "!!!", "a & b | c", "(x", ":*", "\\", "'; drop table x; --", "🙂", "<b>"]
)
@db
def test_it_takes_any_odd_query(client_a, tenant_a, q):
    """Web-search syntax never fails (websearch_to_tsquery takes any text); LIKE's wildcards
    are matched as themselves."""
    conversation(tenant_a, "", f"odd {q} text")
    assert [h["snippet"] for h in found(client_a, q)] == [f"odd {q} text"]


@db
def test_it_matches_like_wildcards_literally(client_a, tenant_a):
    conversation(tenant_a, "", "I am 100% sure", "snake_case names")
    conversation(tenant_a, "", "nothing special here")
    assert [h["snippet"] for h in found(client_a, "%")] == ["I am 100% sure"]
    assert [h["snippet"] for h in found(client_a, "_")] == ["snake_case names"]


@db
def test_it_refuses_a_nul_character(client_a):
    assert error_of(client_a.get("/api/v1/search", {"q": "a\x00b"}))["param"] == "q"


@db
def test_it_takes_a_query_of_200_characters(client_a, tenant_a):
    text = "y" * 200
    conversation(tenant_a, "", f"long {text} words")
    assert len(found(client_a, text)) == 1


@db
def test_it_documents_the_operation(client_a):
    schema = client_a.get("/api/schema/?format=json").json()
    operation = schema["paths"]["/api/v1/search"]["get"]
    assert {"200", "400", "401"} <= set(operation["responses"])
    assert {p["name"] for p in operation["parameters"]} == {"q", "limit"}


# --- The query itself ---------------------------------------------------------------------------


@db
def test_the_substring_search_serves_without_full_text(tenant_a, tenant_b):
    """What the embedded SQLite of ``make run`` runs, here on PostgreSQL too."""
    session = conversation(tenant_a, "Swimming", "I swim across the fjord every summer")
    conversation(tenant_b, "", "The fjord of B")
    hits = search.search(tenant=tenant_a, q="FJORD", full_text=False)
    assert [(h.session_id, h.role) for h in hits] == [(session.id, "user")]
    assert search.search(tenant=tenant_a, q="fjord across", full_text=False) == []
    assert [h.message_id for h in search.search(tenant=tenant_a, q="swim", full_text=False)] == [
        None,
        session.messages.get().id,
    ]


@pytest.mark.skipif("os.environ.get('DATABASE_URL', '').startswith('sqlite')")
@db
def test_the_search_uses_the_indexes(tenant_a):
    """Both sides of the search's OR (the full-text and the substring match) are answered from
    migration 0014's indexes: their expressions are those the search compiles to."""
    conversation(tenant_a, "kubernetes", "kubernetes")
    plans = []
    for rows, field in ((Message.objects, "content"), (ChatSession.objects, "title")):
        queryset = search._scored(rows.all(), field, "kuber", full_text=True, bonus=0)
        sql, params = queryset.query.sql_with_params()
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL enable_seqscan = off")  # as on a table too big to scan
            cursor.execute(f"EXPLAIN {sql}", params)
            plans.append(" ".join(row[0] for row in cursor.fetchall()))
    assert "chat_message_search" in plans[0] and "chat_message_trigram" in plans[0], plans[0]
    assert "chat_session_title_search" in plans[1] and "chat_session_trigram" in plans[1]


def test_the_migrations_run_on_sqlite(tmp_path):
    """Migration 0014 creates its indexes on PostgreSQL only; SQLite migrates past it and back."""
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}"}
    for target in ([], ["chat", "0013"]):
        run = subprocess.run(
            [sys.executable, "manage.py", "migrate", *target, "-v0"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 0, run.stderr


def test_a_query_is_stripped_and_bounded():
    assert search.search_query_clean("  tea  ") == "tea"
    assert search.search_query_clean("é" * 200) == "é" * 200
    for bad in (None, "", " \n\t", "x" * 201):
        with pytest.raises(search.InvalidRequestError) as caught:
            search.search_query_clean(bad)
        assert caught.value.param == "q"


def test_the_terms_are_the_query_then_its_words():
    assert search.query_terms("deploy cluster") == ["deploy cluster", "cluster", "deploy"]
    assert search.query_terms('"red wine" or beer -water') == [
        '"red wine" or beer -water',
        "red wine",
        "wine",
        "beer",
        "red",
    ]
    assert search.query_terms("get_user(") == ["get_user(", "get_user"]
    assert search.query_terms("Tea tea") == ["Tea tea", "Tea"]


def test_the_ranges_are_merged_and_case_blind():
    assert search.match_ranges("Tea, TEA and steam", ["tea"]) == [(0, 3), (5, 8), (14, 17)]
    assert search.match_ranges("deploy cluster", ["deploy cluster", "cluster"]) == [(0, 14)]
    assert search.match_ranges("nothing", ["tea"]) == []


def test_a_snippet_shows_the_first_match_in_context():
    text = "word " * 100 + "the needle is here " + "tail " * 100
    excerpt, ranges = search.snippet(text, ["needle"])
    assert excerpt.startswith("…word ") and excerpt.endswith("…")
    assert len(excerpt) <= search.SNIPPET_CHARS + 2
    assert [excerpt[s:e] for s, e in ranges] == ["needle"]
    assert excerpt.index("needle") >= search.SNIPPET_BEFORE - 5  # context before it


def test_a_snippet_is_one_line_and_keeps_short_text_whole():
    assert search.snippet("  Hello\n\n  world  ", ["world"]) == ("Hello world", [(6, 11)])
    assert search.snippet("no match here", ["tea"]) == ("no match here", [])


def test_a_snippet_begins_near_a_late_match_even_in_short_text():
    text = "What does this markup do, in an older browser on a phone? It says marzipan."
    excerpt, ranges = search.snippet(text, ["marzipan"])
    assert excerpt == "…in an older browser on a phone? It says marzipan."
    assert [excerpt[s:e] for s, e in ranges] == ["marzipan"]


def test_a_snippet_counts_code_points():
    excerpt, ranges = search.snippet("🙂🙂 café 🙂", ["CAFÉ"])
    assert [excerpt[s:e] for s, e in ranges] == ["café"]
    assert ranges == [(3, 7)]


def test_a_snippet_cuts_a_match_at_its_edge():
    text = "a" * 300 + "needle"
    excerpt, ranges = search.snippet(text, ["needle"])
    assert excerpt.endswith("needle") and excerpt.startswith("…")
    assert [excerpt[s:e] for s, e in ranges] == ["needle"]
