"""The chat UI in a real browser: signing in, streaming, stop, reload, queueing, errors,
hostile markup, renaming and deleting, the keyboard."""

import re
import time

import pytest
from playwright.sync_api import expect

from chat.models import ChatJob, ChatSession, Message
from tenants.models import Tenant
from tests.browser import (
    ESSAY,
    HOSTILE,
    LONG,
    answer_text,
    configure,
    last_answer,
    orm,
    send,
    session_id_of,
    shot,
    sign_in,
    wait_for_text,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]


def test_it_signs_in_and_out(ui):
    page = ui.page(username=None)
    page.goto("/chat/")
    expect(page).to_have_url(re.compile(r"/login/\?next=/chat/"))
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill("wrong")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("correct username and password")
    shot(page, "login")
    sign_in(page, "alice", "alice-pw")
    expect(page.get_by_role("heading", name="How can I help?")).to_be_visible()
    expect(page.locator(".account")).to_contain_text("Owner · Tenant A")
    expect(page.get_by_label("Message", exact=True)).to_be_focused()
    shot(page, "chat-empty")
    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(re.compile(r"/login/$"))
    page.goto("/chat/")
    expect(page).to_have_url(re.compile(r"/login/"))


def test_it_streams_the_answer_as_it_grows_then_regenerates_it(ui):
    page = ui.page()
    configure(page, temperature=0, max_tokens=LONG, system_prompt="You are a sailor.")
    send(page, ESSAY)
    answer = last_answer(page)
    job_id = wait_for_text(page)
    lengths, running_while_shown = [], False
    deadline = time.monotonic() + 60
    while answer.get_attribute("data-state") != "done" and time.monotonic() < deadline:
        length = len(answer.locator(".msg-body").inner_text())
        if answer.get_attribute("data-state") == "generating":
            lengths.append(length)
            if len(lengths) == 3:
                shot(page, "chat-streaming")
            if not running_while_shown:
                running_while_shown = orm(lambda: ChatJob.objects.get(pk=job_id).status) == (
                    "running"
                )
        page.wait_for_timeout(40)
    expect(answer).to_have_attribute("data-state", "done")
    final = len(answer.locator(".msg-body").inner_text())
    # The answer grew on screen while the job was still running, then ended longer.
    assert running_while_shown
    assert len(set(lengths)) >= 3, lengths
    assert lengths[0] < final
    expect(answer.locator(".msg-body")).to_have_attribute("aria-busy", "false")

    # The new conversation: in the address bar, first in the sidebar and highlighted.
    session_id = session_id_of(page)
    current = page.locator("#conv-list .conv").first
    expect(current).to_have_class(re.compile("is-current"))
    expect(current.locator(".conv-link")).to_have_text(ESSAY)
    expect(current.locator(".conv-link")).to_have_attribute("aria-current", "page")
    session = orm(ChatSession.objects.get, pk=session_id)
    assert session.title == ESSAY and session.model == "autoglm-demo"
    assert session.params == {"temperature": 0.0, "max_tokens": LONG}
    assert session.system_prompt == "You are a sailor."
    old = orm(lambda: ChatJob.objects.get(pk=job_id).assistant_message_id)
    shot(page, "chat-answer")

    # Change the conversation's parameters (its model stays), then regenerate the answer.
    page.get_by_role("button", name=re.compile("autoglm")).click()
    expect(page.get_by_label("Model")).to_be_disabled()
    page.locator("#settings-cancel").click()
    configure(page, max_tokens=16)
    assert orm(ChatSession.objects.get, pk=session_id).params["max_tokens"] == 16
    answer.get_by_role("button", name="Regenerate the answer").click()
    answer = last_answer(page)
    expect(answer).to_have_attribute("data-state", "done")
    messages = orm(
        lambda: list(Message.objects.filter(session_id=session_id).order_by("created_at"))
    )
    # The first answer stays, as the earlier version of the new one.
    assert [m.role for m in messages] == ["user", "assistant", "assistant"]
    assert messages[0].content == ESSAY and messages[1].id == old
    assert messages[1].parent_id == messages[2].parent_id == messages[0].id
    assert answer.get_attribute("data-message-id") == str(messages[2].id)
    new_job = orm(ChatJob.objects.get, assistant_message_id=messages[2].id)
    assert new_job.params["max_tokens"] == 16 and new_job.completion_tokens <= 16
    expect(page.locator("#thread .msg")).to_have_count(2)
    expect(answer.locator(".msg-versions")).to_have_accessible_name("Version 2 of 2")


def test_stop_ends_the_job_cancelled_and_keeps_the_partial_answer(ui):
    page = ui.page()
    configure(page, temperature=0, max_tokens=LONG)
    send(page, ESSAY)
    job_id = wait_for_text(page)
    stop = page.get_by_role("button", name="Stop generating")
    expect(stop).to_be_visible()
    stop.click()
    answer = last_answer(page)
    expect(answer).to_have_attribute("data-state", "stopped")
    expect(answer.locator(".msg-stopped")).to_be_visible()
    expect(page.get_by_role("button", name="Send message")).to_be_visible()
    shot(page, "chat-stopped")
    job = orm(ChatJob.objects.select_related("assistant_message").get, pk=job_id)
    assert job.status == "cancelled" and job.finish_reason == "cancelled"
    assert 0 < job.completion_tokens < LONG
    assert job.assistant_message.content == job.output != ""  # the partial answer is kept
    assert answer.get_attribute("data-message-id") == str(job.assistant_message_id)
    shown = answer_text(page)
    page.reload()
    expect(last_answer(page).locator(".msg-stopped")).to_be_visible()
    assert answer_text(page) == shown
    expect(last_answer(page).get_by_role("button", name="Regenerate the answer")).to_be_visible()


def test_reloading_mid_answer_continues_it_with_nothing_lost(ui):
    page = ui.page()
    configure(page, temperature=0, max_tokens=1900)
    send(page, ESSAY)
    job_id = wait_for_text(page)
    page.reload()
    # The reloaded page found the answer still being generated and follows it again.
    expect(page.locator("#chat")).to_have_attribute("data-active-job", job_id)
    answer = last_answer(page)
    expect(answer).to_have_attribute("data-state", "done", timeout=60_000)
    streamed = answer_text(page)
    job = orm(ChatJob.objects.select_related("assistant_message").get, pk=job_id)
    assert job.status == "succeeded" and job.assistant_message.content
    # Rendered from the stored answer, the same text: nothing was lost or doubled.
    page.reload()
    expect(page.locator("#chat")).not_to_have_attribute("data-active-job", re.compile("."))
    assert answer_text(page) == streamed != ""
    expect(page.locator("#thread .msg")).to_have_count(2)


def test_a_queued_answer_shows_its_place_in_line(ui):
    page = ui.page()
    configure(page, model="autoglm-idle")  # no worker serves it: its jobs stay queued
    send(page, "Is anyone there?")
    answer = last_answer(page)
    expect(answer).to_have_attribute("data-state", "queued")
    expect(answer.locator(".msg-status")).to_have_text("Queued (position 1 in line)")
    shot(page, "chat-queued")
    job_id = answer.get_attribute("data-job-id")
    page.keyboard.press("Escape")  # Esc stops, like the Stop button
    expect(answer).to_have_attribute("data-state", "stopped")
    expect(answer.locator(".msg-status")).to_have_text("Stopped before any answer was written.")
    assert orm(ChatJob.objects.get, pk=job_id).status == "cancelled"


def test_errors_show_in_place_with_a_retry(ui, tenant_a):
    page = ui.page()
    configure(page, max_tokens=16)
    orm(Tenant.objects.filter(pk=tenant_a.pk).update, tokens_per_month=1)
    send(page, "Hello?")
    error = last_answer(page).locator(".msg-error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("quota")
    shot(page, "chat-error")
    orm(Tenant.objects.filter(pk=tenant_a.pk).update, tokens_per_month=None)
    error.get_by_role("button", name="Retry").click()
    expect(last_answer(page)).to_have_attribute("data-state", "done")
    expect(page.locator("#thread .msg-error")).to_have_count(0)

    # A job that fails on the worker (the answer cannot fit the context window).
    configure(page, max_tokens=4000)
    send(page, "Tell me everything.")
    error = last_answer(page).locator(".msg-error")
    expect(error).to_contain_text("context")
    page.reload()  # the failed answer is still shown, with its retry
    error = last_answer(page).locator(".msg-error")
    expect(error).to_contain_text("context")
    configure(page, max_tokens=16)
    error.get_by_role("button", name="Retry").click()
    expect(last_answer(page)).to_have_attribute("data-state", "done")
    session_id = session_id_of(page)
    roles = orm(
        lambda: list(
            Message.objects.filter(session_id=session_id)
            .order_by("created_at")
            .values_list("role", "content")
        )
    )
    assert [r for r, _ in roles] == ["user", "assistant", "user", "assistant"]
    assert roles[2][1] == "Tell me everything."


def test_hostile_html_is_shown_as_text_and_never_runs(ui, tenant_a):
    code = "```python\ndef greet(name):\n    return f'hi {name}'\n```"
    assistant = (
        f"Model output: {HOSTILE}\n\n<iframe src=javascript:alert(1)></iframe>\n\n"
        f"[click](javascript:window.__pwned=3) ![pixel](http://example.invalid/x.png)\n\n{code}"
    )

    def make():
        session = ChatSession.objects.create(
            tenant=tenant_a, model="autoglm-demo", title='<img src=x onerror="window.__pwned=4">'
        )
        question = Message.objects.create(
            tenant=tenant_a, session=session, role="user", content=HOSTILE
        )
        session.current_message = Message.objects.create(
            tenant=tenant_a, session=session, parent=question, role="assistant", content=assistant
        )
        session.save()
        return session

    session = orm(make)
    page = ui.page()
    page.goto(f"/chat/{session.id}/")
    configure(page, max_tokens=8)
    send(page, HOSTILE)  # and typed in the composer, then answered by the model
    expect(last_answer(page)).to_have_attribute("data-state", "done")
    page.reload()
    thread = page.locator("#thread")
    users = thread.locator(".msg-user .msg-body")
    expect(users).to_have_count(2)
    for index in range(2):
        expect(users.nth(index)).to_have_text(HOSTILE)
    expect(thread.locator(".msg-assistant").first).to_contain_text(HOSTILE)
    expect(thread.locator(".msg-assistant").first).to_contain_text("<iframe")
    expect(page.locator("#conv-list .is-current .conv-link")).to_have_text(session.title)
    for selector in ("img", "script", "iframe", "[onerror]", 'a[href^="javascript"]'):
        expect(thread.locator(selector)).to_have_count(0)
    assert page.evaluate("typeof window.__pwned") == "undefined"
    # Markdown still renders: a highlighted code block, and the link kept as text.
    expect(thread.locator(".code-block code.hljs .hljs-keyword").first).to_have_text("def")
    expect(thread.locator(".code-block .code-head")).to_contain_text("python")
    expect(thread.locator("a", has_text="pixel")).to_have_attribute(
        "href", "http://example.invalid/x.png"
    )
    expect(thread.locator("a", has_text="pixel")).to_have_attribute("rel", re.compile("noopener"))
    shot(page, "chat-hostile", full_page=True)
    page.wait_for_timeout(300)
    assert page.evaluate("typeof window.__pwned") == "undefined"


def test_conversations_are_renamed_and_deleted_with_confirmation(ui, tenant_a):
    def make():
        return [
            ChatSession.objects.create(tenant=tenant_a, model="autoglm-demo", title=title).id
            for title in ("First", "Second", "Third")
        ]

    first, second, third = orm(make)
    page = ui.page()
    page.goto(f"/chat/{second}/")
    links = page.locator("#conv-list .conv-link")
    expect(links).to_have_text(["Third", "Second", "First"])  # newest first
    expect(page.locator('#conv-list [aria-current="page"]')).to_have_text("Second")

    page.get_by_role("button", name="Rename Second").click()
    rename = page.get_by_label("New name of the conversation")
    expect(rename).to_be_focused()
    rename.fill("Renamed by Alice")
    rename.press("Enter")
    expect(links.nth(1)).to_have_text("Renamed by Alice")
    expect(page.locator("#chat-title")).to_have_text("Renamed by Alice")
    assert orm(ChatSession.objects.get, pk=second).title == "Renamed by Alice"

    page.get_by_role("button", name="Delete Third").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text('"Third" and all its messages will be deleted.')
    shot(page, "delete-dialog")
    dialog.get_by_role("button", name="Cancel").click()
    expect(dialog).to_be_hidden()
    expect(links).to_have_count(3)
    assert orm(ChatSession.objects.filter(pk=third).exists)

    page.get_by_role("button", name="Delete Third").click()
    dialog.get_by_role("button", name="Delete").click()
    expect(links).to_have_text(["Renamed by Alice", "First"])
    assert not orm(ChatSession.objects.filter(pk=third).exists)

    # Deleting the open conversation leaves it for a new chat.
    page.get_by_role("button", name="Delete Renamed by Alice").click()
    dialog.get_by_role("button", name="Delete").click()
    expect(page).to_have_url(re.compile(r"/chat/$"))
    expect(links).to_have_text(["First"])
    assert orm(lambda: list(ChatSession.objects.values_list("id", flat=True))) == [first]


def test_shift_enter_makes_a_new_line_and_messages_copy(ui):
    page = ui.page(clipboard=True)
    configure(page, max_tokens=12)
    box = page.get_by_label("Message", exact=True)
    box.fill("line one")
    box.press("Shift+Enter")
    box.press_sequentially("line two")
    expect(page.locator("#thread .msg")).to_have_count(0)  # nothing sent yet
    box.press("Enter")
    expect(last_answer(page)).to_have_attribute("data-state", "done")
    expect(box).to_have_value("")
    user = page.locator("#thread .msg-user").last
    expect(user.locator(".msg-body")).to_have_text("line one\nline two")
    user.hover()
    user.get_by_role("button", name="Copy message").click()
    expect(page.locator("#toasts")).to_contain_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == "line one\nline two"
    last_answer(page).get_by_role("button", name="Copy message").click()
    message_id = last_answer(page).get_attribute("data-message-id")
    stored = orm(Message.objects.get, pk=message_id).content
    assert page.evaluate("navigator.clipboard.readText()") == stored != ""
