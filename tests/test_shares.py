"""Share links: the API that makes, lists and revokes them, and the page that shows one only to
signed-in members of the same organisation (anyone else, and a revoked link: the same 404)."""

import re

import pytest
from django.test import Client

from chat.models import ChatSession, Message, ShareLink
from chat.services import session_update

pytestmark = pytest.mark.django_db


def error_of(response, status: int) -> dict:
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


def signed_in(username: str) -> Client:
    client = Client()
    assert client.login(username=username, password=f"{username}-pw")
    return client


CURRENT = object()


def say(session: ChatSession, role: str, content: str, parent=CURRENT) -> Message:
    """A message after ``parent`` (default: the current one), which becomes the current one."""
    if parent is CURRENT:
        parent = session.current_message
    message = Message.objects.create(
        tenant=session.tenant, session=session, parent=parent, role=role, content=content
    )
    session.current_message = message
    session.save(update_fields=["current_message"])
    return message


@pytest.fixture
def conversation(client_a) -> ChatSession:
    created = client_a.post("/api/v1/sessions", {"title": "Sea notes"}, format="json").json()
    session = ChatSession.objects.get(pk=created["id"])
    question = say(session, "user", "Tell me about **tides**.")
    question.attachments = [{"name": "harbour.txt", "text": "High water at 06:12."}]
    question.save(update_fields=["attachments"])
    say(session, "assistant", "Tides follow the *moon*.")
    return session


def share_of(client, session) -> dict:
    response = client.post(f"/api/v1/sessions/{session.id}/shares")
    assert response.status_code == 201, response.content
    return response.json()


def token_of(share: dict) -> str:
    return re.search(r"/share/([^/]+)/$", share["url"]).group(1)


def test_it_creates_lists_and_revokes_a_link(client_a, conversation):
    share = share_of(client_a, conversation)
    assert share["object"] == "chat.share"
    assert share["title"] == "Sea notes"
    assert share["revoked_at"] is None
    assert share["message_count"] == 2
    assert share["shared_by"] is None  # made with an API key, not by a person
    assert re.fullmatch(r"http://testserver/share/[A-Za-z0-9_-]{20,}/", share["url"])
    second = share_of(client_a, conversation)
    assert token_of(second) != token_of(share)

    listed = client_a.get(f"/api/v1/sessions/{conversation.id}/shares").json()
    assert listed["object"] == "list"
    assert [s["id"] for s in listed["data"]] == [second["id"], share["id"]]  # newest first

    assert client_a.delete(f"/api/v1/shares/{share['id']}").status_code == 204
    revoked = client_a.get(f"/api/v1/shares/{share['id']}").json()
    assert revoked["revoked_at"] is not None
    # Revoking again is harmless and keeps the first time.
    assert client_a.delete(f"/api/v1/shares/{share['id']}").status_code == 204
    assert (
        client_a.get(f"/api/v1/shares/{share['id']}").json()["revoked_at"]
        == (revoked["revoked_at"])
    )
    listed = client_a.get(f"/api/v1/sessions/{conversation.id}/shares").json()["data"]
    assert [(s["id"], s["revoked_at"] is None) for s in listed] == [
        (second["id"], True),
        (share["id"], False),
    ]


def test_it_snapshots_the_branch_shown(client_a, conversation):
    first, answer = conversation.messages.order_by("created_at")
    # Another version of the first message, on a branch not shown: not in the snapshot.
    say(conversation, "user", "An edited question", parent=None)
    say(conversation, "assistant", "Another answer")
    conversation.current_message = answer
    conversation.save(update_fields=["current_message"])
    share = ShareLink.objects.get(pk=share_of(client_a, conversation)["id"])
    assert [(m["role"], m["content"]) for m in share.messages] == [
        ("user", "Tell me about **tides**."),
        ("assistant", "Tides follow the *moon*."),
    ]
    assert share.messages[0]["attachments"] == [
        {"name": "harbour.txt", "text": "High water at 06:12."}
    ]


def test_the_snapshot_does_not_change_when_the_conversation_goes_on(client_a, conversation):
    share = share_of(client_a, conversation)
    say(conversation, "user", "And the sun?")
    say(conversation, "assistant", "The sun too, less.")
    session_update(session=conversation, title="Renamed later")
    Message.objects.filter(session=conversation, role="user").update(content="edited in place")

    page = signed_in("bob").get(f"/share/{token_of(share)}/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "Tell me about **tides**." in html
    assert "Tides follow the *moon*." in html
    assert "And the sun?" not in html and "The sun too" not in html
    assert "edited in place" not in html
    assert re.search(r'id="shared-title">Sea notes</h1>', html)  # the title it had


def test_a_member_of_the_organisation_sees_the_page(client_a, conversation):
    alice = signed_in("alice")
    created = alice.post(
        f"/api/v1/sessions/{conversation.id}/shares", content_type="application/json"
    )
    assert created.status_code == 201
    share = created.json()
    assert share["shared_by"] == "alice"
    page = signed_in("bob").get(f"/share/{token_of(share)}/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "Shared by alice on" in html
    assert 'id="composer"' not in html and "<textarea" not in html  # read-only
    assert "Continue in a new chat" in html
    assert page["Content-Security-Policy"].startswith("default-src 'self'")


def test_anyone_else_gets_the_same_not_found(client_a, conversation, tenant_b):
    share = share_of(client_a, conversation)
    token = token_of(share)
    charlie = signed_in("charlie").get(f"/share/{token}/")
    unknown = signed_in("bob").get("/share/no-such-token/")
    assert charlie.status_code == unknown.status_code == 404
    for page in (charlie, unknown):
        html = page.content.decode()
        assert "Not found" in html
        assert "Tides follow" not in html and "Sea notes" not in html

    signed_out = Client().get(f"/share/{token}/")
    assert signed_out.status_code == 302
    assert signed_out["Location"] == f"/login/?next=/share/{token}/"

    client_a.delete(f"/api/v1/shares/{share['id']}")
    after = signed_in("bob").get(f"/share/{token}/")
    assert after.status_code == 404
    assert "Tides follow" not in after.content.decode()


def test_it_keeps_links_within_the_tenant(client_a, client_b, conversation):
    share = share_of(client_a, conversation)
    for method, path in [
        ("post", f"/api/v1/sessions/{conversation.id}/shares"),
        ("get", f"/api/v1/sessions/{conversation.id}/shares"),
        ("get", f"/api/v1/shares/{share['id']}"),
        ("delete", f"/api/v1/shares/{share['id']}"),
    ]:
        assert error_of(getattr(client_b, method)(path), 404)["code"] == "not_found"
    assert ShareLink.objects.get(pk=share["id"]).revoked_at is None
    assert error_of(client_a.delete("/api/v1/shares/not-a-uuid"), 404)["code"] == "not_found"
    assert error_of(client_a.get("/api/v1/sessions/nope/shares"), 404)["code"] == "not_found"
    # Without credentials: the API's 401, never a page.
    assert error_of(Client().get(f"/api/v1/shares/{share['id']}"), 401)["code"] == (
        "invalid_api_key"
    )


def test_a_browser_needs_the_csrf_token_to_share(conversation):
    client = Client(enforce_csrf_checks=True)
    assert client.login(username="alice", password="alice-pw")
    response = client.post(
        f"/api/v1/sessions/{conversation.id}/shares", content_type="application/json"
    )
    assert error_of(response, 403)["code"] == "permission_denied"
    assert not ShareLink.objects.exists()


def test_it_creates_once_per_idempotency_key(client_a, conversation):
    headers = {"HTTP_IDEMPOTENCY_KEY": "share-1"}
    first = client_a.post(f"/api/v1/sessions/{conversation.id}/shares", **headers)
    again = client_a.post(f"/api/v1/sessions/{conversation.id}/shares", **headers)
    assert first.status_code == again.status_code == 201
    assert first.json()["id"] == again.json()["id"]
    assert ShareLink.objects.count() == 1


def test_continue_copies_the_snapshot_into_a_new_chat_of_the_reader(
    client_a, conversation, tenant_b
):
    share = share_of(client_a, conversation)
    say(conversation, "user", "Later, not shared")
    bob = signed_in("bob")
    response = bob.post(f"/share/{token_of(share)}/continue")
    assert response.status_code == 302
    new_id = re.fullmatch(r"/chat/([0-9a-f-]{36})/", response["Location"]).group(1)
    copy = ChatSession.objects.get(pk=new_id)
    assert copy.pk != conversation.pk
    assert copy.tenant_id == conversation.tenant_id
    assert copy.title == "Sea notes"
    path = list(
        Message.objects.filter(session=copy).order_by("created_at").values_list("role", "content")
    )
    assert path == [("user", "Tell me about **tides**."), ("assistant", "Tides follow the *moon*.")]
    assert copy.current_message.content == "Tides follow the *moon*."
    assert copy.current_message.parent.parent is None
    assert copy.current_message.parent.attachments == [
        {"name": "harbour.txt", "text": "High water at 06:12."}
    ]
    page = bob.get(response["Location"])
    assert page.status_code == 200 and "Tides follow the *moon*." in page.content.decode()
    # The original is untouched.
    assert conversation.messages.count() == 3

    # Not for anyone else, and not once revoked.
    assert signed_in("charlie").post(f"/share/{token_of(share)}/continue").status_code == 404
    client_a.delete(f"/api/v1/shares/{share['id']}")
    assert bob.post(f"/share/{token_of(share)}/continue").status_code == 404
    assert ChatSession.objects.count() == 2


def test_deleting_the_conversation_deletes_its_links(client_a, conversation):
    share = share_of(client_a, conversation)
    assert client_a.delete(f"/api/v1/sessions/{conversation.id}").status_code == 204
    assert not ShareLink.objects.exists()
    assert signed_in("bob").get(f"/share/{token_of(share)}/").status_code == 404


def test_a_member_of_several_organisations_reads_and_continues_from_another(
    client_a, conversation, tenant_b
):
    from tenants.models import Membership
    from tenants.services import membership_ensure

    membership_ensure(
        tenant=tenant_b, username="bob", password="bob-pw", role=Membership.Role.MEMBER
    )
    share = share_of(client_a, conversation)
    bob = signed_in("bob")
    assert bob.post("/org/switch/", {"tenant": tenant_b.id}).status_code == 302
    # Acting in Tenant B, bob is still a member of Tenant A: he may read A's link...
    assert bob.get(f"/share/{token_of(share)}/").status_code == 200
    # ...and its copy is made in Tenant A, which he then acts in (or it would be "not found").
    response = bob.post(f"/share/{token_of(share)}/continue")
    copy = ChatSession.objects.get(pk=response["Location"].split("/")[2])
    assert copy.tenant_id == conversation.tenant_id
    assert bob.get(response["Location"]).status_code == 200


def test_a_conversation_without_messages_has_nothing_to_share(client_a):
    # The chat page offers Share only once there is a message; the API says why it refuses.
    session = client_a.post("/api/v1/sessions", {}, format="json").json()
    error = error_of(client_a.post(f"/api/v1/sessions/{session['id']}/shares"), 400)
    assert error["message"] == "The conversation has no messages yet; there is nothing to share."
    assert error["type"] == "invalid_request_error" and error["code"] == "empty_conversation"
    assert not ShareLink.objects.exists()
