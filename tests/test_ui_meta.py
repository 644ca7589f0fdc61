"""An answer's details in the browser (model, tokens, time to first token: hover, focus, tap,
after a reload too) and Continue for an answer cut by max_tokens."""

import re

import pytest
from playwright.sync_api import expect

from chat.models import ChatJob, Message
from tests.browser import configure, last_answer, orm, send, session_id_of, shot

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]


def _jobs_of(session_id: str) -> list[ChatJob]:
    return list(ChatJob.objects.filter(session_id=session_id).order_by("created_at"))


def _answers_of(session_id: str) -> list[str]:
    messages = Message.objects.filter(session_id=session_id, role="assistant")
    return list(messages.values_list("content", flat=True))


def _expect_details(page, job: ChatJob) -> None:
    pop = last_answer(page).locator(".msg-details-pop")
    expect(pop).to_be_visible()
    expect(pop).to_contain_text("autoglm-demo")
    expect(pop).to_contain_text(re.compile(rf"Prompt tokens\s*{job.prompt_tokens}(?!\d)"))
    expect(pop).to_contain_text(re.compile(rf"Completion tokens\s*{job.completion_tokens}(?!\d)"))
    expect(pop).to_contain_text(re.compile(r"Time to first token\s*\d+(\.\d+)? (ms|s)"))


def test_it_shows_an_answers_details_on_hover_and_focus(ui):
    page = ui.page()
    configure(page, max_tokens=8)
    send(page, "Hello there")
    answer = last_answer(page)
    expect(answer).to_have_attribute("data-state", "done")
    job = orm(_jobs_of, session_id_of(page))[0]
    assert job.ttft_ms is not None
    button = answer.get_by_role("button", name="Answer details")
    pop = answer.locator(".msg-details-pop")
    expect(pop).to_be_hidden()

    button.hover()
    _expect_details(page, job)
    expect(button).to_have_attribute("aria-expanded", "true")
    shot(page, "answer-details")
    page.mouse.move(5, 5)
    expect(pop).to_be_hidden()

    # The keyboard: focus shows them (the button is described by them), Escape hides them.
    button.focus()
    _expect_details(page, job)
    expect(button).to_have_accessible_description(re.compile("autoglm-demo"))
    page.keyboard.press("Escape")
    expect(pop).to_be_hidden()

    # After a reload the server gives the same numbers.
    page.reload()
    last_answer(page).get_by_role("button", name="Answer details").hover()
    _expect_details(page, job)


def test_it_shows_the_details_on_a_tap_on_a_phone(ui):
    page = ui.page(width=390, height=844)
    configure(page, max_tokens=8)
    send(page, "Hello there")
    expect(last_answer(page)).to_have_attribute("data-state", "done")
    job = orm(_jobs_of, session_id_of(page))[0]
    page.reload()
    button = last_answer(page).get_by_role("button", name="Answer details")
    button.click()
    _expect_details(page, job)
    shot(page, "answer-details-phone")
    button.click()  # a second tap closes them
    expect(last_answer(page).locator(".msg-details-pop")).to_be_hidden()


def test_it_continues_an_answer_cut_off_by_max_tokens(ui):
    page = ui.page()
    configure(page, temperature=0, max_tokens=4)
    send(page, "Write an essay about the sea.")
    answer = last_answer(page)
    expect(answer).to_have_attribute("data-state", "done")
    session_id = session_id_of(page)
    [first] = orm(_jobs_of, session_id)
    assert first.finish_reason == "length"
    cutoff = answer.locator(".msg-cutoff")
    expect(cutoff).to_be_visible()
    expect(cutoff).to_contain_text("Cut off at the max tokens limit")
    shot(page, "answer-cut-off")
    message_id = answer.get_attribute("data-message-id")
    before = orm(_answers_of, session_id)

    cutoff.get_by_role("button", name="Continue").click()
    expect(answer).to_have_attribute("data-state", "done")
    expect(page.locator("#thread .msg-assistant")).to_have_count(1)  # the same answer
    assert answer.get_attribute("data-message-id") == message_id
    first_job, more = orm(_jobs_of, session_id)
    assert more.continued_message_id is not None and str(more.continued_message_id) == message_id
    stored = orm(_answers_of, session_id)
    assert stored == [before[0] + more.output] and more.output  # one message, longer
    expect(answer.locator(".msg-body")).to_contain_text(stored[0].strip()[:12])
    total = first_job.completion_tokens + more.completion_tokens
    answer.get_by_role("button", name="Answer details").hover()
    expect(answer.locator(".msg-details-pop")).to_contain_text(
        re.compile(rf"Completion tokens\s*{total}(?!\d)")
    )
    # Stored as one message: a reload shows one answer, with every token counted.
    page.reload()
    expect(page.locator("#thread .msg-assistant")).to_have_count(1)
    expect(last_answer(page)).to_have_attribute("data-message-id", message_id)
    expect(last_answer(page)).to_have_attribute("data-completion-tokens", str(total))
    # Cut off again (4 more tokens): Continue is offered again, and only on the last answer.
    if more.finish_reason == "length":
        expect(last_answer(page).locator(".msg-cutoff")).to_be_visible()


def test_the_continue_button_is_on_phones_too(ui):
    page = ui.page(width=390, height=844)
    configure(page, temperature=0, max_tokens=4)
    send(page, "Write an essay about the sea.")
    expect(last_answer(page)).to_have_attribute("data-state", "done")
    expect(last_answer(page).get_by_role("button", name="Continue")).to_be_visible()
    shot(page, "answer-cut-off-phone")
