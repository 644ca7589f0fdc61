"""Edit and branch in a real browser: an edited message starts a new branch whose prompt is
the edited path, regenerated answers stay as versions, and the arrows move between them."""

import pytest
from playwright.sync_api import expect

from chat.jobs import job_prompt_messages
from chat.models import ChatJob, ChatSession, Message
from tests.browser import configure, last_answer, orm, send, session_id_of, shot

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]


def done(page):
    expect(last_answer(page)).to_have_attribute("data-state", "done")


def prompt_of(job_id):
    return orm(lambda: job_prompt_messages(job=ChatJob.objects.get(pk=job_id)))


def test_editing_a_message_branches_and_the_arrows_switch_versions(ui):
    page = ui.page()
    configure(page, max_tokens=4)
    send(page, "first question")
    done(page)
    send(page, "second question")
    done(page)
    session_id = session_id_of(page)
    user = page.locator("#thread .msg-user").nth(1)
    user.hover()
    user.get_by_role("button", name="Edit message").click()
    editor = user.get_by_role("textbox", name="Edited message")
    expect(editor).to_be_focused()
    editor.fill("second question, edited")
    shot(page, "chat-edit")
    editor.press("Enter")
    done(page)
    edited_job = last_answer(page).get_attribute("data-job-id")
    # The model saw the edited path: the first exchange, then the edited message only.
    prompt = prompt_of(edited_job)
    assert [m["content"] for m in prompt if m["role"] == "user"] == [
        "first question",
        "second question, edited",
    ]
    assert "second question" not in [m["content"] for m in prompt]
    expect(page.locator("#thread .msg")).to_have_count(4)
    edited = page.locator("#thread .msg-user").nth(1)
    expect(edited.locator(".msg-body")).to_have_text("second question, edited")
    versions = edited.locator(".msg-versions")
    expect(versions).to_have_accessible_name("Version 2 of 2")
    shot(page, "chat-versions")
    page.set_viewport_size({"width": 390, "height": 844})
    shot(page, "chat-versions-phone")
    page.set_viewport_size({"width": 1280, "height": 860})

    # Back to the original: its branch, with its own answer, comes back.
    versions.get_by_role("button", name="Previous version").click()
    original = page.locator("#thread .msg-user").nth(1)
    expect(original.locator(".msg-body")).to_have_text("second question")
    expect(original.locator(".msg-versions")).to_have_accessible_name("Version 1 of 2")
    expect(page.locator("#thread .msg")).to_have_count(4)
    # It is the current branch now: a reload shows it, and a new message follows it.
    page.goto(f"/chat/{session_id}/")
    expect(page.locator("#thread .msg-user").nth(1).locator(".msg-body")).to_have_text(
        "second question"
    )
    send(page, "third question")
    done(page)
    third = prompt_of(last_answer(page).get_attribute("data-job-id"))
    assert [m["content"] for m in third if m["role"] == "user"] == [
        "first question",
        "second question",
        "third question",
    ]
    # Forward again, with the keyboard.
    page.goto(f"/chat/{session_id}/")
    nxt = page.locator("#thread .msg-user").nth(1).get_by_role("button", name="Next version")
    nxt.focus()
    page.keyboard.press("Enter")
    expect(page.locator("#thread .msg-user").nth(1).locator(".msg-body")).to_have_text(
        "second question, edited"
    )
    expect(page.locator("#thread .msg")).to_have_count(4)
    assert not ui.problems


def test_regenerated_answers_are_versions_of_one_another(ui):
    page = ui.page()
    configure(page, max_tokens=4)
    send(page, "a question")
    done(page)
    first = last_answer(page).get_attribute("data-message-id")
    last_answer(page).get_by_role("button", name="Regenerate the answer").click()
    done(page)
    second = last_answer(page).get_attribute("data-message-id")
    assert second != first
    versions = last_answer(page).locator(".msg-versions")
    expect(versions).to_have_accessible_name("Version 2 of 2")
    versions.get_by_role("button", name="Previous version").click()
    expect(last_answer(page)).to_have_attribute("data-message-id", first)
    expect(last_answer(page).locator(".msg-versions")).to_have_accessible_name("Version 1 of 2")
    session = orm(ChatSession.objects.get, pk=session_id_of(page))
    assert str(session.current_message_id) == first
    answers = orm(
        lambda: list(
            Message.objects.filter(session=session, role="assistant").values_list("id", flat=True)
        )
    )
    assert sorted(map(str, answers)) == sorted([first, second])
    assert not ui.problems


def test_the_last_message_is_edited_from_the_keyboard(ui):
    page = ui.page()
    configure(page, max_tokens=4)
    send(page, "typo questoin")
    done(page)
    page.evaluate("document.dispatchEvent(new CustomEvent('chat:edit-last'))")
    editor = page.get_by_role("textbox", name="Edited message")
    expect(editor).to_be_focused()
    editor.press("Escape")  # cancels: nothing sent, the message as it was
    expect(editor).to_have_count(0)
    expect(page.locator("#thread .msg")).to_have_count(2)
    assert not ui.problems
