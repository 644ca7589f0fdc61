"""Organising conversations through the API: pin, archive and tag a session, and list them by
these (with the old list unchanged for clients that ask for nothing)."""

import pytest

from chat.models import ChatSession

pytestmark = pytest.mark.django_db


def error_of(response, status: int) -> dict:
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


def create(client, title: str) -> dict:
    response = client.post("/api/v1/sessions", {"title": title}, format="json")
    assert response.status_code == 201
    return response.json()


def patch(client, session: dict, body: dict):
    return client.patch(f"/api/v1/sessions/{session['id']}", body, format="json")


def listed(client, query: str = "") -> list[str]:
    response = client.get(f"/api/v1/sessions{query}")
    assert response.status_code == 200, response.content
    return [s["title"] for s in response.json()["data"]]


def test_a_new_session_is_unpinned_unarchived_untagged(client_a):
    session = create(client_a, "fresh")
    assert (session["pinned"], session["archived"], session["tags"]) == (False, False, [])


def test_it_pins_archives_and_tags_a_session(client_a):
    session = create(client_a, "plans")
    body = patch(client_a, session, {"pinned": True}).json()
    assert (body["pinned"], body["archived"], body["title"]) == (True, False, "plans")
    body = patch(client_a, session, {"archived": True, "tags": ["  Work ", "ideas"]}).json()
    assert (body["pinned"], body["archived"], body["tags"]) == (True, True, ["Work", "ideas"])
    stored = ChatSession.objects.get(pk=session["id"])
    assert (stored.pinned, stored.archived, stored.tags) == (True, True, ["Work", "ideas"])
    assert client_a.get(f"/api/v1/sessions/{session['id']}").json()["tags"] == ["Work", "ideas"]

    # Only what is sent changes.
    body = patch(client_a, session, {"title": "renamed"}).json()
    assert (body["pinned"], body["archived"], body["tags"]) == (True, True, ["Work", "ideas"])
    body = patch(client_a, session, {"pinned": False, "archived": False, "tags": []}).json()
    assert (body["pinned"], body["archived"], body["tags"]) == (False, False, [])


def test_it_keeps_a_tag_given_twice_once(client_a):
    session = create(client_a, "dupes")
    body = patch(client_a, session, {"tags": ["work", "Work", " work ", "home"]}).json()
    assert body["tags"] == ["work", "home"]
    # Ten distinct tags are fine, even sent with repeats.
    ten = [f"t{i}" for i in range(10)]
    assert patch(client_a, session, {"tags": [*ten, "t0"]}).json()["tags"] == ten


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"tags": [f"t{i}" for i in range(11)]}, "tags"),
        ({"tags": ["ok", ""]}, "tags.1"),
        ({"tags": ["   "]}, "tags.0"),
        ({"tags": ["x" * 33]}, "tags.0"),
        ({"tags": [7]}, "tags.0"),
        ({"tags": "work"}, "tags"),
        ({"tags": None}, "tags"),
        ({"pinned": "true"}, "pinned"),
        ({"archived": 1}, "archived"),
        ({"pinned": None}, "pinned"),
    ],
)
def test_it_refuses_bad_values(client_a, body, param):
    session = create(client_a, "strict")
    error = error_of(patch(client_a, session, body), 400)
    assert error["param"] == param
    assert error["code"] == "invalid_request_error"
    stored = ChatSession.objects.get(pk=session["id"])
    assert (stored.pinned, stored.archived, stored.tags) == (False, False, [])


def test_a_tag_of_32_characters_is_fine(client_a):
    session = create(client_a, "long")
    assert patch(client_a, session, {"tags": ["x" * 32]}).json()["tags"] == ["x" * 32]


def test_it_lists_by_archived_and_by_tag(client_a):
    kept = create(client_a, "kept")
    old = create(client_a, "old")
    work = create(client_a, "work")
    patch(client_a, old, {"archived": True, "tags": ["work", "2025"]})
    patch(client_a, work, {"tags": ["work"]})
    patch(client_a, kept, {"tags": ["Work"]})  # another tag: the filter is exact

    assert listed(client_a) == ["work", "old", "kept"]  # by default, everything, as before
    assert listed(client_a, "?archived=false") == ["work", "kept"]
    assert listed(client_a, "?archived=true") == ["old"]
    assert listed(client_a, "?tag=work") == ["work", "old"]
    assert listed(client_a, "?tag=work&archived=false") == ["work"]
    assert listed(client_a, "?tag=2025") == ["old"]
    assert listed(client_a, "?tag=nothing") == []
    # Paging still works with a filter.
    page = client_a.get("/api/v1/sessions?tag=work&limit=1").json()
    assert [s["title"] for s in page["data"]] == ["work"] and page["has_more"]
    after = client_a.get(f"/api/v1/sessions?tag=work&limit=1&after={page['last_id']}").json()
    assert [s["title"] for s in after["data"]] == ["old"] and not after["has_more"]


@pytest.mark.parametrize("query", ["?archived=yes", "?archived=1", "?tag=" + "x" * 33])
def test_it_refuses_bad_filters(client_a, query):
    error = error_of(client_a.get(f"/api/v1/sessions{query}"), 400)
    assert error["param"] in ("archived", "tag")


def test_another_tenant_can_neither_change_nor_find_them(client_a, client_b):
    session = create(client_a, "mine")
    patch(client_a, session, {"tags": ["secret"], "pinned": True})
    error = error_of(patch(client_b, session, {"pinned": False, "tags": []}), 404)
    assert error["code"] == "not_found"
    stored = ChatSession.objects.get(pk=session["id"])
    assert (stored.pinned, stored.tags) == (True, ["secret"])
    assert listed(client_b, "?tag=secret") == []
    assert listed(client_b, "?archived=false") == []
    create(client_b, "theirs")
    assert listed(client_b, "?archived=false") == ["theirs"]
    assert listed(client_a, "?tag=secret") == ["mine"]
