"""Keyboard shortcuts (the ? dialog, new chat, copy the last answer, focus the box, the sidebar)
and the theme switch (System / Light / Dark, kept across reloads, before the first paint)."""

import re

import pytest
from playwright.sync_api import expect

from chat.models import Message
from tests.browser import configure, last_answer, orm, send, session_id_of, shot

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]

LIGHT_BG, DARK_BG = "rgb(255, 255, 255)", "rgb(14, 16, 20)"


def _background(page) -> str:
    return page.evaluate("getComputedStyle(document.body).backgroundColor")


def _search_highlight(page) -> str:
    """The background of a search result's highlighted match, as the page's theme paints it."""
    return page.evaluate(
        """() => {
          const hit = document.createElement("li");
          hit.className = "search-hit";
          const mark = hit.appendChild(document.createElement("mark"));
          document.body.append(hit);
          const colour = getComputedStyle(mark).backgroundColor;
          hit.remove();
          return colour;
        }"""
    )


def _answered(page, text: str = "Hello") -> str:
    configure(page, max_tokens=8)
    send(page, text)
    expect(last_answer(page)).to_have_attribute("data-state", "done")
    return session_id_of(page)


def test_question_mark_opens_the_list_of_shortcuts(ui):
    page = ui.page()
    box = page.get_by_label("Message", exact=True)
    box.fill("why?")  # typed in the box, a ? is text
    expect(box).to_have_value("why?")
    expect(page.locator("#shortcuts-dialog")).to_be_hidden()

    page.locator("#chat-title").click()  # out of the box
    page.keyboard.press("?")
    dialog = page.get_by_role("dialog", name="Keyboard shortcuts")
    expect(dialog).to_be_visible()
    for action in (
        "New chat",
        "Focus the message box",
        "Stop generating",
        "Edit the last message",
        "Copy the last answer",
        "Show or hide the sidebar",
        "Switch between light and dark",
    ):
        expect(dialog).to_contain_text(action)
    expect(dialog.locator("dd", has_text="Shift").first).to_be_visible()
    # Every app page has the search dialog, so its shortcut is offered.
    search_row = dialog.locator("[data-needs='#search-dialog']")
    expect(search_row).to_have_count(1)
    expect(search_row).to_be_visible()
    shot(page, "shortcuts-dialog")
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()

    # The button in the sidebar opens it too, and focus comes back to it.
    opener = page.get_by_role("button", name="Keyboard shortcuts")
    opener.click()
    expect(dialog).to_be_visible()
    dialog.get_by_role("button", name="Close").click()
    expect(dialog).to_be_hidden()
    expect(opener).to_be_focused()


def test_the_shortcuts_dialog_on_a_phone(ui):
    page = ui.page(width=390, height=844)
    page.get_by_role("heading", name="How can I help?").click()  # out of the box
    page.keyboard.press("?")
    dialog = page.get_by_role("dialog", name="Keyboard shortcuts")
    expect(dialog).to_be_visible()
    box = dialog.bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= 390
    shot(page, "shortcuts-dialog-phone")


def test_ctrl_shift_o_starts_a_new_chat(ui):
    page = ui.page()
    session_id = _answered(page)
    assert session_id in page.url
    page.keyboard.press("Control+Shift+O")
    expect(page).to_have_url(re.compile(r"/chat/$"))
    expect(page.get_by_role("heading", name="How can I help?")).to_be_visible()


def test_ctrl_shift_c_copies_the_last_answer(ui):
    page = ui.page(clipboard=True)
    session_id = _answered(page)
    stored = orm(lambda: Message.objects.get(session_id=session_id, role="assistant").content)
    page.evaluate("navigator.clipboard.writeText('nothing yet')")
    page.keyboard.press("Control+Shift+C")
    expect(page.locator("#toasts")).to_contain_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == stored


def test_shift_escape_focuses_the_message_box_and_arrow_up_asks_to_edit(ui):
    page = ui.page()
    box = page.get_by_label("Message", exact=True)
    page.get_by_role("button", name="Keyboard shortcuts").focus()
    expect(box).not_to_be_focused()
    page.keyboard.press("Shift+Escape")
    expect(box).to_be_focused()

    page.evaluate(
        "window.__edits = 0; document.addEventListener('chat:edit-last', () => window.__edits++)"
    )
    box.press("ArrowUp")  # empty box: edit the last message (the chat page's to do)
    box.fill("draft")
    box.press("ArrowUp")  # not empty: the caret moves, nothing else
    assert page.evaluate("window.__edits") == 1


def test_ctrl_shift_s_hides_and_shows_the_sidebar(ui):
    page = ui.page()
    sidebar = page.locator("#sidebar")
    expect(sidebar).to_be_visible()
    page.keyboard.press("Control+Shift+S")
    expect(sidebar).to_be_hidden()
    page.reload()  # kept on this device
    expect(sidebar).to_be_hidden()
    # The top bar shows the title now, once: not again in the chat's header.
    expect(page.locator(".topbar-title")).to_have_text("New chat")
    expect(page.locator("#chat-title")).to_be_hidden()
    shot(page, "sidebar-hidden")
    # The top bar's menu button brings it back.
    page.get_by_role("button", name="Open the menu").click()
    expect(sidebar).to_be_visible()
    page.keyboard.press("Control+Shift+S")
    page.keyboard.press("Control+Shift+S")
    expect(sidebar).to_be_visible()


def test_the_theme_switch_changes_the_colours_and_survives_a_reload(ui):
    page = ui.page()
    assert _background(page) == LIGHT_BG
    page.get_by_role("radio", name="Dark").click()
    expect(page.locator("html")).to_have_attribute("data-theme", "dark")
    assert _background(page) == DARK_BG
    _answered(page, "Show me code")
    page.reload()
    expect(page.locator("html")).to_have_attribute("data-theme", "dark")
    assert _background(page) == DARK_BG
    expect(page.get_by_role("radio", name="Dark")).to_be_checked()
    # highlight.js's dark sheet is the one on.
    media = page.eval_on_selector_all(
        "link[data-scheme]", "links => links.map(l => [l.dataset.scheme, l.media])"
    )
    assert sorted(media) == [["dark", "all"], ["light", "not all"]]
    shot(page, "theme-dark")

    # The keyboard switches it back; System follows the system's scheme again.
    page.keyboard.press("Control+Shift+L")
    expect(page.locator("html")).to_have_attribute("data-theme", "light")
    assert _background(page) == LIGHT_BG
    page.get_by_role("radio", name="System").click()
    expect(page.locator("html")).not_to_have_attribute("data-theme", re.compile("."))
    assert _background(page) == LIGHT_BG


def test_light_overrides_a_dark_system_and_the_phone_is_dark_too(ui):
    page = ui.page(color_scheme="dark", width=390, height=844)
    assert _background(page) == DARK_BG  # System: the system's dark
    page.get_by_role("button", name="Open the menu").click()
    page.get_by_role("radio", name="Light").click()
    assert _background(page) == LIGHT_BG
    assert _search_highlight(page) == "rgb(253, 230, 138)"  # the light one, as everything else
    page.get_by_role("radio", name="Dark").click()
    page.get_by_role("button", name="Close the menu").click()
    page.reload()
    assert _background(page) == DARK_BG
    shot(page, "theme-dark-phone")
