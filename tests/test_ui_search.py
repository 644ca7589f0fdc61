"""Search in the browser: Ctrl+K, the results with their highlighted snippets, the jump to the
message found; and another organisation's user finding none of it."""

import re

import pytest
from playwright.sync_api import expect

from tests.browser import HOSTILE, orm, shot
from tests.test_search import conversation

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]


def long_trip(tenant):
    """A conversation whose match is near its start, far above the end a chat page opens at."""
    texts = ["Where should we go in June?", "The Faroe Islands: cliffs and puffins in summer."]
    for i in range(30):
        texts.append(f"Tell me more, part {i}.")
        texts.append(f"Part {i}: " + "Grass roofs, sheep and fog over the fjords. " * 6)
    return conversation(tenant, "Holiday plans", *texts)


def results(page):
    return page.locator("#search-results .search-hit")


def test_alice_finds_a_message_of_another_conversation_and_jumps_to_it(ui, tenant_a):
    groceries = orm(conversation, tenant_a, "Groceries", "Buy milk and eggs", "Noted.")
    trip = orm(long_trip, tenant_a)
    answer = orm(lambda: trip.messages.get(content__contains="puffins"))
    page = ui.page()
    page.goto(f"/chat/{groceries.id}/")
    target = page.locator(f"#m-{answer.id}")
    page.goto(f"/chat/{trip.id}/")
    expect(target).to_be_attached()
    expect(target).not_to_be_in_viewport()  # a chat page opens at its end
    page.goto(f"/chat/{groceries.id}/")

    page.keyboard.press("Control+k")
    dialog = page.get_by_role("dialog", name="Search conversations")
    expect(dialog).to_be_visible()
    box = dialog.get_by_role("combobox", name="Search conversations")
    expect(box).to_be_focused()
    box.press_sequentially("puffin")
    hit = results(page).first
    expect(results(page)).to_have_count(1)
    expect(hit.locator(".search-hit-title")).to_have_text("Holiday plans")
    expect(hit.locator(".search-hit-role")).to_have_text("Assistant")
    expect(hit.locator("mark")).to_have_text(["puffin"])
    expect(hit.locator(".search-hit-snippet")).to_have_text(
        "The Faroe Islands: cliffs and puffins in summer."
    )
    expect(hit).to_have_attribute("aria-selected", "true")
    expect(box).to_have_attribute("aria-activedescendant", hit.get_attribute("id"))
    shot(page, "search-dialog")

    box.press("Enter")
    page.wait_for_url(re.compile(rf"/chat/{trip.id}/\?message={answer.id}#m-{answer.id}$"))
    expect(target).to_be_in_viewport()
    expect(target).to_have_class(re.compile(r"\bis-found\b"))
    expect(dialog).to_be_hidden()

    # Found again from its own page (read on to the end first): no reload, it comes back.
    page.evaluate("window.__samePage = true")
    page.locator("#messages").evaluate("el => { el.scrollTop = el.scrollHeight; }")
    expect(target).not_to_be_in_viewport()
    page.keyboard.press("Control+k")
    box.fill("puffins")
    expect(results(page)).to_have_count(1)
    box.press("Enter")
    expect(target).to_be_in_viewport()
    expect(target).to_be_focused()
    assert page.evaluate("window.__samePage") is True


def test_the_keyboard_moves_through_the_results_and_esc_closes(ui, tenant_a):
    first = orm(conversation, tenant_a, "Lighthouse keeping", "How do lighthouses work?")
    orm(conversation, tenant_a, "Sailing", "Steer by the lighthouse at night.")
    page = ui.page()
    button = page.get_by_role("button", name="Search", exact=True)
    button.click()
    box = page.get_by_role("combobox", name="Search conversations")
    box.fill("lighthouse")
    expect(results(page)).to_have_count(3)  # a title and two messages
    expect(results(page).first.locator(".search-hit-role")).to_have_text("Title")
    selected = page.locator('#search-results [aria-selected="true"]')
    expect(selected).to_have_id("search-hit-0")
    box.press("ArrowDown")
    box.press("ArrowDown")
    box.press("ArrowDown")  # stays on the last
    expect(selected).to_have_id("search-hit-2")
    box.press("ArrowUp")
    expect(selected).to_have_id("search-hit-1")
    box.press("Escape")
    expect(page.get_by_role("dialog", name="Search conversations")).to_be_hidden()
    expect(button).to_be_focused()

    # A title opens its conversation.
    page.keyboard.press("Control+k")
    box.fill("keeping")
    expect(results(page)).to_have_count(1)
    box.press("Enter")
    page.wait_for_url(re.compile(rf"/chat/{first.id}/$"))


def test_charlie_of_another_organisation_finds_none_of_it(ui, tenant_a, tenant_b):
    orm(conversation, tenant_a, "Holiday plans", "Cliffs and puffins")
    orm(conversation, tenant_b, "Zoo", "The walrus sleeps all day")
    page = ui.page("charlie")
    page.get_by_role("button", name="Search", exact=True).click()
    box = page.get_by_role("combobox", name="Search conversations")
    box.fill("puffins")
    status = page.locator("#search-status")
    expect(status).to_have_text("Nothing found for “puffins”.")
    expect(results(page)).to_have_count(0)
    box.fill("walrus")
    expect(results(page)).to_have_count(1)  # his own are found
    expect(results(page).first.locator(".search-hit-title")).to_have_text("Zoo")


def test_stored_html_is_shown_as_text_on_a_phone(ui, tenant_a):
    orm(conversation, tenant_a, "Markup", "Is this marzipan? " + HOSTILE)
    orm(conversation, tenant_a, "Baking", "Marzipan is almond paste.", "Yes, with sugar.")
    page = ui.page(width=390, height=844)
    page.get_by_role("button", name="Search conversations").click()  # in the top bar
    box = page.get_by_role("combobox", name="Search conversations")
    box.fill("marzipan")
    expect(results(page)).to_have_count(2)
    snippets = page.locator("#search-results .search-hit-snippet")
    expect(snippets.filter(has_text="<img src=x")).to_have_count(1)
    assert page.locator("#search-results img, #search-results script").count() == 0
    assert page.evaluate("window.__pwned") is None
    marks = page.locator("#search-results mark")
    expect(marks).to_have_count(2)
    assert sorted(marks.all_inner_texts()) == ["Marzipan", "marzipan"]
    shot(page, "search-dialog-phone")

    dark = ui.page(width=1280, color_scheme="dark")
    dark.keyboard.press("Control+k")
    dark.get_by_role("combobox", name="Search conversations").fill("marzipan")
    expect(results(dark)).to_have_count(2)
    shot(dark, "search-dialog-dark")
