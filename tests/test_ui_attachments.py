"""Text files attached in the chat UI (picked, dropped, pasted; checked in the browser; chips
before and after sending, and after a reload), and user messages rendered as Markdown, safely."""

import pytest
from playwright.sync_api import expect

from chat import jobs
from chat.models import ChatJob, Message
from tests.browser import HOSTILE, configure, last_answer, orm, send, session_id_of, shot

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]

NOTES = "# Shopping\n\n- milk\n- bread\n"


def a_file(name: str, text: str, mime: str = "text/plain") -> dict:
    return {"name": name, "mimeType": mime, "buffer": text.encode()}


def composer_chips(page):
    return page.locator("#composer-files .file-chip")


def test_it_attaches_a_file_sends_it_with_the_message_and_keeps_it_after_reload(ui):
    page = ui.page()
    configure(page, max_tokens=8)
    picker = page.get_by_label("Files to attach")
    picker.set_input_files([a_file("notes.md", NOTES, "text/markdown"), a_file("extra.txt", "x")])
    expect(composer_chips(page)).to_have_count(2)
    expect(composer_chips(page).last.locator(".file-chip-size")).to_have_text("1 char")
    expect(composer_chips(page).first).to_contain_text("notes.md")
    expect(composer_chips(page).first).to_contain_text(f"{len(NOTES)} chars")
    shot(page, "attach-composer")
    page.get_by_role("button", name="Remove extra.txt").click()
    expect(composer_chips(page)).to_have_count(1)
    expect(page.get_by_label("Message", exact=True)).to_be_focused()

    send(page, "What should I buy?")
    expect(last_answer(page)).to_have_attribute("data-state", "done")
    expect(page.locator("#composer-files")).to_be_hidden()
    sent = page.locator("#thread .msg-user").last
    expect(sent.locator(".file-chip")).to_have_count(1)
    expect(sent.locator(".file-chip")).to_contain_text("notes.md")
    expect(sent.locator(".file-chip-remove")).to_have_count(0)
    expect(sent.locator(".msg-body")).to_have_text("What should I buy?")

    session_id = session_id_of(page)

    def stored():
        message = Message.objects.get(session_id=session_id, role="user")
        job = ChatJob.objects.get(user_message=message)
        return message, jobs.job_prompt_messages(job=job)

    message, prompt = orm(stored)
    assert message.content == "What should I buy?"
    assert message.attachments == [{"name": "notes.md", "text": NOTES}]
    assert "notes.md" in prompt[-1]["content"] and NOTES in prompt[-1]["content"]

    page.reload()
    sent = page.locator("#thread .msg-user").last
    expect(sent.locator(".file-chip")).to_have_count(1)
    expect(sent.locator(".file-chip-name")).to_have_text("notes.md")
    expect(sent.locator(".file-chip-size")).to_have_text(f"{len(NOTES)} chars")
    shot(page, "attach-sent")


def test_it_says_inline_which_file_it_cannot_take(ui):
    page = ui.page()
    picker = page.get_by_label("Files to attach")
    alert = page.locator("#attach-error")
    picker.set_input_files([a_file("huge.txt", "x" * 200_001)])
    expect(alert).to_be_visible()
    expect(alert).to_contain_text("“huge.txt” is too long: 200,001 characters")
    expect(alert).to_contain_text("200,000 in all")
    expect(composer_chips(page)).to_have_count(0)
    shot(page, "attach-too-big")
    picker.set_input_files([a_file("photo.png", "\x89PNG", "image/png")])
    expect(alert).to_contain_text("“photo.png” is not a text file")
    picker.set_input_files([a_file(f"{i}.md", "x") for i in range(6)])
    expect(alert).to_contain_text("At most 5 files")
    expect(composer_chips(page)).to_have_count(5)
    page.locator("#composer-files .file-chip-remove").first.click()
    expect(alert).to_be_hidden()
    # Nothing was sent meanwhile.
    assert orm(lambda: Message.objects.count()) == 0


def test_files_dropped_or_pasted_onto_the_composer_are_attached(ui):
    page = ui.page(width=390, height=844, color_scheme="dark")
    configure(page, max_tokens=8)
    make = """([name, text]) => {
        const data = new DataTransfer();
        data.items.add(new File([text], name, { type: "text/plain" }));
        return data;
    }"""
    dropped = page.evaluate_handle(make, ["dropped.txt", "from a drop"])
    page.dispatch_event("#composer-wrap", "dragover", {"dataTransfer": dropped})
    expect(page.locator("#composer-wrap")).to_have_class("composer-wrap is-dropping")
    page.dispatch_event("#composer-wrap", "drop", {"dataTransfer": dropped})
    expect(composer_chips(page)).to_have_count(1)
    page.evaluate(
        """([name, text]) => {
            const data = new DataTransfer();
            data.items.add(new File([text], name, { type: "text/plain" }));
            const event = new ClipboardEvent("paste", { clipboardData: data, bubbles: true,
                                                         cancelable: true });
            document.getElementById("prompt").dispatchEvent(event);
        }""",
        ["pasted.csv", "a,b\n1,2"],
    )
    expect(composer_chips(page)).to_have_count(2)
    expect(page.get_by_label("Message", exact=True)).to_have_value("")
    shot(page, "attach-phone-composer")
    # Files alone make a message: no text typed.
    page.get_by_role("button", name="Send message").click()
    expect(last_answer(page)).to_have_attribute("data-state", "done")
    sent = page.locator("#thread .msg-user").last
    expect(sent.locator(".file-chip-name")).to_have_text(["dropped.txt", "pasted.csv"])
    shot(page, "attach-phone-sent")
    message = orm(lambda: Message.objects.get(role="user"))
    assert message.content == ""
    assert message.attachments == [
        {"name": "dropped.txt", "text": "from a drop"},
        {"name": "pasted.csv", "text": "a,b\n1,2"},
    ]
    assert orm(lambda: message.session.title) == "dropped.txt"


def test_a_file_too_long_for_the_context_is_refused_with_the_reason(ui):
    page = ui.page()
    configure(page, max_tokens=8)
    book = " ".join(f"word{i} lorem ipsum" for i in range(3000))  # within the characters
    page.get_by_label("Files to attach").set_input_files([a_file("book.txt", book)])
    send(page, "Read it.")
    error = last_answer(page).locator(".msg-error")
    expect(error).to_contain_text("attached files are too long for the model's context")
    expect(error).to_contain_text("of the model's 2048")
    assert orm(lambda: Message.objects.filter(role="user").count()) == 0


def test_user_messages_render_as_markdown_and_hostile_markup_does_nothing(ui):
    page = ui.page()
    configure(page, max_tokens=8)
    typed = "Two things:\n\n- first\n- second\n\n```python\nprint('hi')\n```\n\nline one\nline two"
    send(page, typed)
    expect(last_answer(page)).to_have_attribute("data-state", "done")
    send(page, HOSTILE)
    expect(last_answer(page)).to_have_attribute("data-state", "done")

    def check():
        users = page.locator("#thread .msg-user .msg-body")
        expect(users).to_have_count(2)
        first = users.nth(0)
        expect(first.locator("ul > li")).to_have_text(["first", "second"])
        expect(first.locator("pre code")).to_have_text("print('hi')")
        assert first.locator("p").last.inner_text() == "line one\nline two"
        expect(first.locator("p br")).to_have_count(1)  # a typed newline stays a newline
        expect(users.nth(1)).to_have_text(HOSTILE)
        expect(page.locator("#thread .msg-user img, #thread .msg-user script")).to_have_count(0)
        assert page.evaluate("window.__pwned") is None

    check()
    shot(page, "user-markdown")
    page.reload()
    check()
    # Stored as typed: the Markdown is only how it is shown.
    message = orm(lambda: Message.objects.filter(role="user").order_by("created_at").first())
    assert message.content == typed
