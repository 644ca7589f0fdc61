"""Export and import of conversations through the API: the JSON round trip keeps every branch,
Markdown shows the branch shown, ChatGPT's export comes in as its tree, other tenants' data is
out of reach, and bad files are 400s that import nothing."""

import io
import json
from pathlib import Path

import pytest
from django.test import override_settings

from chat.models import ChatSession, Message
from tests.conftest import DEMO_MODEL

pytestmark = pytest.mark.django_db

FIXTURE = Path(__file__).parent / "fixtures" / "chatgpt_conversations.json"


def error_of(response, status: int) -> dict:
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


def branched(tenant, title="Branches") -> ChatSession:
    """A conversation whose second question was edited: two branches under the first answer,
    the first branch shown."""
    session = ChatSession.objects.create(
        tenant=tenant,
        model=DEMO_MODEL,
        title=title,
        system_prompt="Be brief.",
        params={"temperature": 0.5, "max_tokens": 64},
        tags=["work", "jokes"],
        pinned=True,
    )

    def add(parent, role, content, **kwargs):
        return Message.objects.create(
            tenant=tenant, session=session, parent=parent, role=role, content=content, **kwargs
        )

    u1 = add(None, "user", "Hello", attachments=[{"name": "notes.txt", "text": "a\n```\nb"}])
    a1 = add(u1, "assistant", "Hi! How can I help?")
    u2 = add(a1, "user", "Tell me a joke")
    a2 = add(u2, "assistant", "Why did the chicken cross the road?")
    u2b = add(a1, "user", "Write a haiku instead")
    add(u2b, "assistant", "Autumn moonlight falls")
    session.current_message = a2
    session.save()
    return session


def tree_of(session: ChatSession) -> list[tuple]:
    """The conversation's messages, oldest first, with their parent as an index in that order."""
    messages = list(Message.objects.filter(session=session).order_by("created_at", "id"))
    index = {m.id: i for i, m in enumerate(messages)}
    return [
        (index.get(m.parent_id), m.role, m.content, m.attachments, m.created_at) for m in messages
    ]


def current_index(session: ChatSession) -> int:
    ids = list(Message.objects.filter(session=session).order_by("created_at", "id"))
    return [m.id for m in ids].index(session.current_message_id)


def test_it_exports_a_conversation_and_imports_it_back_whole(client_a, tenant_a):
    source = branched(tenant_a)
    response = client_a.get(f"/api/v1/sessions/{source.id}/export")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    disposition = response["Content-Disposition"]
    assert disposition.startswith("attachment;") and 'filename="autoglm-branches-' in disposition
    document = json.loads(response.content)
    assert document["format"] == "autoglm.conversations" and document["version"] == 1
    [exported] = document["conversations"]
    assert len(exported["messages"]) == 6  # both branches
    assert exported["current_message_id"] == str(source.current_message_id)

    imported = client_a.post("/api/v1/import", document, format="json")
    assert imported.status_code == 201, imported.content
    [made] = imported.json()["data"]
    assert made["title"] == "Branches" and made["messages"] == 6
    copy = ChatSession.objects.get(pk=made["id"])
    assert copy.pk != source.pk and copy.tenant == tenant_a
    assert tree_of(copy) == tree_of(source)
    assert current_index(copy) == current_index(source)
    assert (copy.model, copy.system_prompt, copy.params, copy.tags, copy.pinned) == (
        source.model,
        source.system_prompt,
        source.params,
        source.tags,
        source.pinned,
    )
    assert copy.created_at == source.created_at
    old_ids = set(Message.objects.filter(session=source).values_list("id", flat=True))
    new_ids = set(Message.objects.filter(session=copy).values_list("id", flat=True))
    assert len(new_ids) == 6 and not old_ids & new_ids
    # The branch shown is the same path, read through the API as any client reads it.
    history = client_a.get(f"/api/v1/sessions/{copy.id}/messages").json()["data"]
    assert [m["content"] for m in history] == [
        "Hello",
        "Hi! How can I help?",
        "Tell me a joke",
        "Why did the chicken cross the road?",
    ]


def test_it_exports_the_branch_shown_as_markdown(client_a, tenant_a):
    session = branched(tenant_a)
    response = client_a.get(f"/api/v1/sessions/{session.id}/export?format=markdown")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/markdown; charset=utf-8"
    assert response["Content-Disposition"].endswith('.md"')
    text = response.content.decode()
    assert text.startswith("# Branches\n\nModel: autoglm-demo · Started ")
    assert "## System prompt\n\nBe brief.\n" in text
    assert "## You\n\nHello\n" in text
    assert "## Assistant\n\nHi! How can I help?\n" in text
    assert "## You\n\nTell me a joke\n\n## Assistant\n\nWhy did the chicken" in text
    assert "haiku" not in text and "Autumn" not in text  # the other branch
    # The attachment's own ``` cannot close its fence.
    assert "Attached: notes.txt\n\n````\na\n```\nb\n````\n" in text


def test_it_exports_all_of_the_tenants_conversations(client_a, client_b, tenant_a, tenant_b):
    branched(tenant_a, "One")
    branched(tenant_a, "Two")
    branched(tenant_b, "Outsider")
    document = client_a.get("/api/v1/export").json()
    assert [c["title"] for c in document["conversations"]] == ["Two", "One"]
    response = client_a.get("/api/v1/export?format=markdown")
    assert "# One" in response.content.decode() and "Outsider" not in response.content.decode()
    assert 'filename="autoglm-tenant-a-' in response["Content-Disposition"]
    theirs = client_b.get("/api/v1/export").json()
    assert [c["title"] for c in theirs["conversations"]] == ["Outsider"]


def test_it_imports_chatgpts_export_as_its_tree(client_a, tenant_a):
    response = client_a.post("/api/v1/import", json.loads(FIXTURE.read_text()), format="json")
    assert response.status_code == 201, response.content
    made = response.json()["data"]
    assert [m["title"] for m in made] == ["Cat picture", "Lisbon day trip"]
    assert {m["model"] for m in made} == {DEMO_MODEL}  # gpt-4o is not served here
    lisbon = ChatSession.objects.get(pk=made[1]["id"])
    # No system, hidden, tool-call or tool nodes; a skipped node's reply hangs from the message
    # before it.
    assert [(parent, role, content) for parent, role, content, _, _ in tree_of(lisbon)] == [
        (None, "user", "Plan a day in Lisbon."),
        (0, "assistant", "Start at Belém, then Alfama."),
        (1, "user", "Where should I eat?"),
        (2, "assistant", "Try Time Out Market."),
        (1, "user", "Which tram goes to Belém?"),
        (4, "assistant", "Take tram 15E from Praça da Figueira."),
    ]
    assert current_index(lisbon) == 5
    assert lisbon.created_at.timestamp() == 1714000000.0
    history = client_a.get(f"/api/v1/sessions/{lisbon.id}/messages").json()["data"]
    assert [m["content"] for m in history] == [
        "Plan a day in Lisbon.",
        "Start at Belém, then Alfama.",
        "Which tram goes to Belém?",
        "Take tram 15E from Praça da Figueira.",
    ]
    cat = ChatSession.objects.get(pk=made[0]["id"])
    # The picture is left out, its question kept.
    assert [m[2] for m in tree_of(cat)] == ["What is in this picture?", "A cat on a windowsill."]
    # The sidebar's order is the conversations' own: the newer first.
    listed = client_a.get("/api/v1/sessions").json()["data"]
    assert [s["title"] for s in listed] == ["Cat picture", "Lisbon day trip"]


def test_it_takes_a_file_upload(client_a, tenant_a):
    upload = io.BytesIO(FIXTURE.read_bytes())
    upload.name = "conversations.json"
    response = client_a.post("/api/v1/import", {"file": upload}, format="multipart")
    assert response.status_code == 201, response.content
    assert len(response.json()["data"]) == 2
    assert ChatSession.objects.filter(tenant=tenant_a).count() == 2


def test_it_keeps_other_tenants_out(client_a, client_b, tenant_a, tenant_b):
    theirs = branched(tenant_b, "Theirs")
    assert error_of(client_a.get(f"/api/v1/sessions/{theirs.id}/export"), 404)["code"] == (
        "not_found"
    )
    mine = branched(tenant_a, "Mine")
    assert client_b.get(f"/api/v1/sessions/{mine.id}/export").status_code == 404
    # A file naming B's ids (as an export of B's would) makes new rows for A: B's stay B's.
    document = client_b.get(f"/api/v1/sessions/{theirs.id}/export").json()
    made = client_a.post("/api/v1/import", document, format="json").json()["data"]
    copy = ChatSession.objects.get(pk=made[0]["id"])
    assert copy.tenant == tenant_a and copy.pk != theirs.pk
    assert Message.objects.filter(session=theirs, tenant=tenant_b).count() == 6
    assert Message.objects.filter(session=copy, tenant=tenant_a).count() == 6
    # A parent outside the file (a real message of B's) is refused, not linked.
    other = branched(tenant_b, "Other")
    document["conversations"][0]["messages"][0]["parent_id"] = str(
        Message.objects.filter(session=other).last().id
    )
    error = error_of(client_a.post("/api/v1/import", document, format="json"), 400)
    assert error["param"] == "conversations[0].messages[0].parent_id"


def ours(*messages, **conversation) -> dict:
    return {
        "format": "autoglm.conversations",
        "version": 1,
        "conversations": [{"title": "t", "messages": list(messages), **conversation}],
    }


def msg(id, parent=None, role="user", content="hi", **extra) -> dict:
    return {"id": id, "parent_id": parent, "role": role, "content": content, **extra}


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        ({}, None, "Expected an autoglm export"),
        ({"format": "other"}, "format", "Unknown format"),
        ({"format": "autoglm.conversations", "version": 2}, "version", "version 1"),
        ({"format": "autoglm.conversations", "version": 1}, "conversations", "must be a list"),
        (
            {"format": "autoglm.conversations", "version": 1, "conversations": []},
            "conversations",
            "no conv",
        ),
        (ours(msg("1", role="robot")), "conversations[0].messages[0].role", "one of"),
        (ours(msg("1", content=5)), "conversations[0].messages[0].content", "a string"),
        (ours(msg("1"), msg("1")), "conversations[0].messages[1].id", "used twice"),
        (ours(msg("1", parent="9")), "conversations[0].messages[0].parent_id", "'9'"),
        (ours(msg("1", parent="2"), msg("2", parent="1")), "conversations[0].messages", "cycle"),
        (ours(msg("1"), current_message_id="7"), "conversations[0].current_message_id", "'7'"),
        (ours(msg("1", created_at="yesterday")), "conversations[0].messages[0].created_at", "ISO"),
        (ours(msg("1", attachments=[{"name": "x"}])), "messages[0].attachments[0].text", "string"),
        (ours(msg("1", content="a\x00b")), "conversations[0].messages[0].content", "null"),
        (ours(params={"temperature": 9}), "conversations[0].params.temperature", "2"),
        (ours(tags=[1]), "conversations[0].tags", "string"),
        ([{"title": "no mapping"}], "[0].mapping", "an object"),
        ([{"mapping": {"a": {"parent": "zz"}}}], "[0].mapping.a", "not in the mapping"),
        ([{"mapping": {"a": {"parent": "b"}, "b": {"parent": "a"}}}], "[0].mapping", "cycle"),
        ([{"mapping": {}, "create_time": "noon"}], "[0].create_time", "seconds"),
        ([{"mapping": {"a": {"parent": ["x"]}}}], "[0].mapping.a", "not in the mapping"),
    ],
)
def test_it_refuses_a_malformed_file_with_what_is_wrong(client_a, tenant_a, body, param, words):
    error = error_of(client_a.post("/api/v1/import", body, format="json"), 400)
    assert (error["type"], error["code"]) == ("invalid_request_error", "invalid_import")
    assert error["param"] is None if param is None else error["param"].endswith(param), error
    assert words in error["message"], error
    assert not ChatSession.objects.filter(tenant=tenant_a).exists()


def test_it_refuses_what_is_not_json(client_a):
    response = client_a.post("/api/v1/import", b"{nope", content_type="application/json")
    assert error_of(response, 400)["code"] == "invalid_json"
    upload = io.BytesIO(b"\xff\xfe not json")
    upload.name = "conversations.json"
    response = client_a.post("/api/v1/import", {"file": upload}, format="multipart")
    assert error_of(response, 400)["code"] == "invalid_json"
    response = client_a.post("/api/v1/import", {"other": "x"}, format="multipart")
    assert error_of(response, 400)["param"] == "file"


def test_it_imports_all_or_nothing(client_a, tenant_a):
    document = ours(msg("1"), msg("2", parent="1", role="assistant"))
    document["conversations"].append({"title": "bad", "messages": [msg("1", content=None)]})
    error = error_of(client_a.post("/api/v1/import", document, format="json"), 400)
    assert error["param"] == "conversations[1].messages[0].content"
    assert not ChatSession.objects.filter(tenant=tenant_a).exists()
    assert not Message.objects.filter(tenant=tenant_a).exists()


def test_it_keeps_to_its_limits(client_a, tenant_a):
    with override_settings(AUTOGLM_MAX_CONTENT_CHARS=10):
        error = error_of(
            client_a.post("/api/v1/import", ours(msg("1", content="x" * 11)), "json"), 400
        )
        assert "10 characters" in error["message"]
    two = ours(msg("1"))
    two["conversations"].append({"title": "again"})
    with override_settings(AUTOGLM_IMPORT_MAX_CONVERSATIONS=1):
        error = error_of(client_a.post("/api/v1/import", two, format="json"), 400)
        assert "at most 1" in error["message"] and error["param"] == "conversations"
    with override_settings(AUTOGLM_IMPORT_MAX_BYTES=200):
        big = ours(msg("1", content="y" * 300))
        assert error_of(client_a.post("/api/v1/import", big, "json"), 413)["code"] == (
            "request_too_large"
        )
        upload = io.BytesIO(json.dumps(big).encode())
        upload.name = "big.json"
        response = client_a.post("/api/v1/import", {"file": upload}, format="multipart")
        assert error_of(response, 413)["code"] == "request_too_large"
    # A body larger than other requests may send (Django's 2.5 MB) is still an import.
    large = ours(
        *[msg(str(i), str(i - 1) if i else None, content="z" * 30_000) for i in range(100)]
    )
    response = client_a.post("/api/v1/import", large, format="json")
    assert response.status_code == 201, response.content[:300]
    assert ChatSession.objects.filter(tenant=tenant_a).count() == 1  # only that one


def test_it_fills_in_what_the_file_leaves_out(client_a, tenant_a):
    document = ours(
        msg("q", created_at="2024-05-01T10:00:00Z"),
        # An answer dated before its question still comes after it.
        msg("a", parent="q", role="assistant", content="ok", created_at="2024-05-01T09:00:00Z"),
        msg("b", parent="a", content="no time"),
        model="gpt-9",
        title="  " + "T" * 300,
    )
    made = client_a.post("/api/v1/import", document, format="json").json()["data"][0]
    session = ChatSession.objects.get(pk=made["id"])
    assert session.model == DEMO_MODEL and session.title == "T" * 200
    history = client_a.get(f"/api/v1/sessions/{session.id}/messages").json()["data"]
    assert [m["content"] for m in history] == ["hi", "ok", "no time"]  # the newest leaf shown


def test_it_replays_an_import_sent_again_with_its_idempotency_key(client_a, tenant_a):
    document = ours(msg("1"))
    first = client_a.post("/api/v1/import", document, format="json", HTTP_IDEMPOTENCY_KEY="k1")
    again = client_a.post("/api/v1/import", document, format="json", HTTP_IDEMPOTENCY_KEY="k1")
    assert again.status_code == 201 and again["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert ChatSession.objects.filter(tenant=tenant_a).count() == 1


def test_it_refuses_an_unknown_export_format(client_a, tenant_a):
    session = branched(tenant_a)
    error = error_of(client_a.get(f"/api/v1/sessions/{session.id}/export?format=xml"), 400)
    assert error["param"] == "format"
    assert error_of(client_a.get("/api/v1/export?format=pdf"), 400)["param"] == "format"


def test_it_needs_a_caller(tenant_a):
    from rest_framework.test import APIClient

    assert APIClient().get("/api/v1/export").status_code == 401
    assert APIClient().post("/api/v1/import", {}, format="json").status_code == 401


def test_it_skips_what_it_cannot_read_in_chatgpts_nodes(client_a):
    odd = {"author": "x", "metadata": [], "content": {"content_type": ["text"], "parts": "hi"}}
    root = {"parent": None, "message": odd}
    kept = {
        "parent": "a",
        "message": {
            "author": {"role": "user"},
            "content": {"content_type": "text", "parts": ["kept", {"asset": 1}]},
        },
    }
    body = [{"title": None, "current_node": {}, "mapping": {"a": root, "b": kept}}]
    made = client_a.post("/api/v1/import", body, format="json").json()["data"]
    session = ChatSession.objects.get(pk=made[0]["id"])
    assert (session.title, [m[2] for m in tree_of(session)]) == ("", ["kept"])
