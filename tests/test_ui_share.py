"""Share links in a real browser: alice shares a conversation from its header, bob (same
organisation) reads it, charlie (another) gets the 404 page, and after alice revokes the link
so does bob. Bob continues it in a chat of his own."""

import itertools
import re

import pytest
from playwright.sync_api import expect

from chat.models import ChatSession, Message
from tests.browser import configure, last_answer, orm, send, session_id_of, shot

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]

ANSWER = "Tides follow the **moon**.\n\n```python\nprint('high water')\n```"


def conversation(tenant, title="Sea notes") -> str:
    """A conversation of two messages, written straight to the database."""

    def make():
        session = ChatSession.objects.create(tenant=tenant, model="autoglm-demo", title=title)
        question = Message.objects.create(
            tenant=tenant,
            session=session,
            role="user",
            content="Tell me about *tides*.",
            attachments=[{"name": "harbour.txt", "text": "High water at 06:12."}],
        )
        answer = Message.objects.create(
            tenant=tenant, session=session, parent=question, role="assistant", content=ANSWER
        )
        session.current_message = answer
        session.save(update_fields=["current_message"])
        return str(session.id)

    return orm(make)


def create_link(page) -> str:
    page.get_by_role("button", name="Share", exact=True).click()
    dialog = page.get_by_role("dialog", name="Share this conversation")
    expect(dialog).to_be_visible()
    dialog.get_by_role("button", name="Create link").click()
    url = dialog.get_by_label("New link")
    expect(url).to_have_value(re.compile(r"^http://127\.0\.0\.1:\d+/share/[\w-]+/$"))
    expect(url).to_be_focused()
    return url.input_value()


def test_alice_shares_bob_reads_charlie_cannot_and_revoking_ends_it(ui, tenant_a):
    session_id = conversation(tenant_a)
    alice = ui.page(clipboard=True)
    alice.goto(f"/chat/{session_id}/")
    link = create_link(alice)
    dialog = alice.get_by_role("dialog", name="Share this conversation")
    dialog.get_by_role("button", name="Copy link").click()
    assert alice.evaluate("navigator.clipboard.readText()") == link
    expect(dialog.locator(".share-link")).to_have_count(1)
    expect(dialog.locator(".share-link")).to_contain_text("2 messages · by alice")
    shot(alice, "share-dialog")

    bob = ui.page("bob")
    bob.goto(link)
    expect(bob.get_by_role("heading", name="Sea notes")).to_be_visible()
    expect(bob.locator("#shared-meta")).to_contain_text(re.compile(r"Shared by alice on \d"))
    thread = bob.locator("#thread")
    expect(thread.locator(".msg")).to_have_count(2)
    # Markdown is rendered as in the chat (emphasis, bold, a highlighted code block), and the
    # question's attached file is shown.
    expect(thread.locator(".msg-user .msg-body")).to_have_text("Tell me about tides.")
    expect(thread.locator(".msg-user .msg-body em")).to_have_text("tides")
    expect(thread.locator(".msg-user .file-chip")).to_contain_text("harbour.txt")
    answer = thread.locator(".msg-assistant .msg-body")
    expect(answer.locator("strong")).to_have_text("moon")
    expect(answer.locator(".code-block code.hljs")).to_contain_text("print('high water')")
    # Read-only: nothing to type into.
    expect(bob.locator("#composer, #prompt, textarea")).to_have_count(0)
    expect(thread.get_by_role("button", name="Edit message")).to_have_count(0)
    expect(thread.get_by_role("button", name="Copy message")).to_have_count(2)
    expect(bob.get_by_role("button", name="Continue in a new chat")).to_be_visible()
    shot(bob, "share-page")

    charlie = ui.page("charlie")
    response = charlie.goto(link)
    assert response.status == 404
    expect(charlie.get_by_role("heading", name="Not found")).to_be_visible()
    expect(charlie.locator("body")).not_to_contain_text("Tides follow")
    assert charlie.goto("/share/made-up-token/").status == 404

    # Alice revokes it from the same dialog: the link is gone for bob too.
    dialog.get_by_role("button", name=re.compile(r"^Revoke the link of ")).click()
    expect(dialog.locator(".share-link")).to_have_count(0)
    expect(dialog.get_by_text("No links yet.")).to_be_visible()
    assert bob.reload().status == 404
    expect(bob.get_by_role("heading", name="Not found")).to_be_visible()
    expect(bob.locator("body")).not_to_contain_text("Tides follow")

    # Closing the dialog (Escape) gives the focus back to its button; reopened, it lists none.
    alice.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    expect(alice.get_by_role("button", name="Share", exact=True)).to_be_focused()
    alice.keyboard.press("Enter")
    expect(dialog).to_be_visible()
    expect(dialog.get_by_text("No links yet.")).to_be_visible()


def test_signed_out_readers_sign_in_first(ui, tenant_a):
    session_id = conversation(tenant_a)
    alice = ui.page()
    alice.goto(f"/chat/{session_id}/")
    link = create_link(alice)
    path = re.sub(r"^http://[^/]+", "", link)
    page = ui.page(username=None)
    page.goto(link)
    expect(page).to_have_url(re.compile(r"/login/\?next=" + re.escape(path)))
    page.get_by_label("Username").fill("bob")
    page.get_by_label("Password").fill("bob-pw")
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(link)
    expect(page.locator("#thread .msg")).to_have_count(2)


def test_bob_continues_the_shared_conversation_in_a_new_chat(ui, tenant_a):
    session_id = conversation(tenant_a)
    alice = ui.page()
    alice.goto(f"/chat/{session_id}/")
    link = create_link(alice)

    bob = ui.page("bob")
    bob.goto(link)
    bob.get_by_role("button", name="Continue in a new chat").click()
    expect(bob).to_have_url(re.compile(r"/chat/[0-9a-f-]{36}/$"))
    new_id = session_id_of(bob)
    assert new_id != session_id
    expect(bob.locator("#thread .msg")).to_have_count(2)
    expect(bob.locator("#thread .msg-assistant strong")).to_have_text("moon")
    expect(bob.locator('#conv-list [aria-current="page"]')).to_have_text("Sea notes")
    # The copy goes on on its own (a real answer); the original does not change.
    configure(bob, max_tokens=8)
    send(bob, "And the sun?")
    expect(last_answer(bob)).to_have_attribute("data-state", "done")
    assert orm(Message.objects.filter(session_id=new_id).count) == 4
    assert orm(Message.objects.filter(session_id=session_id).count) == 2


def test_a_new_chat_can_be_shared_once_it_has_a_message(ui):
    page = ui.page()
    share = page.get_by_role("button", name="Share", exact=True)
    expect(share).to_be_hidden()  # nothing to share yet
    configure(page, max_tokens=8)
    send(page, "Hello there")
    expect(last_answer(page)).to_have_attribute("data-state", "done")
    expect(share).to_be_visible()
    # A short title leaves the header's buttons side by side at its right end, not spread out.
    boxes = [
        page.locator(selector).bounding_box()
        for selector in ("#export-toggle", "#share-open", "#settings-toggle")
    ]
    gaps = [right["x"] - (left["x"] + left["width"]) for left, right in itertools.pairwise(boxes)]
    assert all(0 <= gap <= 16 for gap in gaps), gaps
    link = create_link(page)
    reader = ui.page("bob")
    reader.goto(link)
    expect(reader.locator("#thread .msg-user .msg-body")).to_have_text("Hello there")
    expect(reader.locator("#thread .msg")).to_have_count(2)


def test_the_shared_page_follows_the_theme_chosen(ui, tenant_a):
    alice = ui.page()  # a light system
    alice.goto(f"/chat/{conversation(tenant_a)}/")
    link = create_link(alice)
    alice.get_by_role("button", name="Close").click()
    alice.get_by_role("radio", name="Dark").click()
    alice.goto(link)
    expect(alice.locator("html")).to_have_attribute("data-theme", "dark")
    # highlight.js's dark sheet is the one on, as on the chat page.
    media = alice.eval_on_selector_all(
        "link[data-scheme]", "links => links.map(l => [l.dataset.scheme, l.media])"
    )
    assert sorted(media) == [["dark", "all"], ["light", "not all"]]


def test_phone_screens(ui, tenant_a):
    session_id = conversation(tenant_a)
    alice = ui.page(width=390, height=844)
    alice.goto(f"/chat/{session_id}/")
    link = create_link(alice)
    shot(alice, "share-dialog-phone")
    bob = ui.page("bob", width=390, height=844, color_scheme="dark")
    bob.goto(link)
    expect(bob.locator("#thread .msg")).to_have_count(2)
    continue_button = bob.get_by_role("button", name="Continue in a new chat")
    expect(continue_button).to_be_in_viewport()
    shot(bob, "share-page-phone")
