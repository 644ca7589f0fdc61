"""The sidebar in a real browser: pinning moves a conversation into "Pinned", archiving hides it
behind "Archived (n)", tags show as chips that filter the list; by mouse and by keyboard."""

import re

import pytest
from playwright.sync_api import expect

from chat.models import ChatSession
from tests.browser import configure, last_answer, orm, send, shot

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]


def sessions(tenant, *titles) -> dict[str, str]:
    def make():
        return {
            title: str(
                ChatSession.objects.create(tenant=tenant, model="autoglm-demo", title=title).id
            )
            for title in titles
        }

    return orm(make)


def stored(session_id: str) -> tuple:
    return orm(
        lambda: ChatSession.objects.values_list("pinned", "archived", "tags").get(pk=session_id)
    )


def more(page, title: str):
    """Open a conversation's Pin / Archive / Edit tags actions."""
    button = page.get_by_role("button", name=f"More actions for {title}", exact=True)
    button.click()
    expect(button).to_have_attribute("aria-expanded", "true")
    return button


def test_pin_moves_a_conversation_into_pinned_and_back(ui, tenant_a):
    ids = sessions(tenant_a, "Alpha", "Beta", "Gamma")
    page = ui.page()
    page.goto("/chat/")
    pinned = page.locator("#conv-pinned .conv-link")
    others = page.locator("#conv-list .conv-link")
    expect(page.get_by_role("heading", name="Pinned")).to_be_hidden()
    expect(others).to_have_text(["Gamma", "Beta", "Alpha"])

    more(page, "Alpha")
    page.get_by_role("button", name="Pin Alpha", exact=True).click()
    expect(page.get_by_role("heading", name="Pinned")).to_be_visible()
    expect(pinned).to_have_text(["Alpha"])
    expect(others).to_have_text(["Gamma", "Beta"])
    assert stored(ids["Alpha"]) == (True, False, [])
    # It stays there after a reload (the page is drawn so), and on the organisation's pages.
    page.reload()
    expect(pinned).to_have_text(["Alpha"])
    expect(page.get_by_role("list", name="Pinned")).to_contain_text("Alpha")
    page.goto("/org/keys/")
    expect(pinned).to_have_text(["Alpha"])

    more(page, "Alpha")
    page.get_by_role("button", name="Unpin Alpha", exact=True).click()
    expect(pinned).to_have_count(0)
    expect(page.get_by_role("heading", name="Pinned")).to_be_hidden()
    expect(others).to_have_text(["Gamma", "Beta", "Alpha"])  # back in its place, by date
    assert stored(ids["Alpha"]) == (False, False, [])


def test_archive_hides_a_conversation_behind_the_archived_toggle(ui, tenant_a):
    ids = sessions(tenant_a, "Alpha", "Beta")
    page = ui.page()
    page.goto(f"/chat/{ids['Beta']}/")
    others = page.locator("#conv-list .conv-link")
    toggle = page.locator("#archived-toggle")
    expect(toggle).to_be_hidden()

    more(page, "Beta")
    page.get_by_role("button", name="Archive Beta", exact=True).click()
    expect(others).to_have_text(["Alpha"])
    expect(toggle).to_have_text("Archived (1)")
    expect(toggle).to_have_attribute("aria-expanded", "false")
    expect(page.get_by_role("link", name="Beta")).to_be_hidden()
    assert stored(ids["Beta"]) == (False, True, [])
    # Archived, not gone: the conversation itself still opens.
    expect(page.locator("#chat-title")).to_have_text("Beta")

    page.reload()
    expect(others).to_have_text(["Alpha"])
    toggle.click()
    expect(toggle).to_have_attribute("aria-expanded", "true")
    archived = page.get_by_role("list", name="Archived conversations")
    expect(archived.get_by_role("link", name="Beta")).to_be_visible()
    shot(page, "sidebar-archived")

    more(page, "Beta")
    page.get_by_role("button", name="Unarchive Beta", exact=True).click()
    expect(others).to_have_text(["Beta", "Alpha"])
    expect(toggle).to_be_hidden()
    assert stored(ids["Beta"]) == (False, False, [])


def test_tags_show_as_chips_that_filter_the_list(ui, tenant_a):
    ids = sessions(tenant_a, "Alpha", "Beta", "Gamma")
    page = ui.page()
    page.goto("/chat/")
    more(page, "Alpha")
    page.get_by_role("button", name="Edit tags of Alpha").click()
    tags = page.get_by_label("Tags of Alpha, separated by commas")
    expect(tags).to_be_focused()
    tags.fill(" work,ideas, work ")
    tags.press("Enter")
    alpha = page.locator(f'.conv[data-session-id="{ids["Alpha"]}"]')
    expect(alpha.locator(".tag-chip")).to_have_text(["work", "ideas"])
    assert stored(ids["Alpha"]) == (False, False, ["work", "ideas"])

    more(page, "Gamma")
    page.get_by_role("button", name="Edit tags of Gamma").click()
    page.get_by_label("Tags of Gamma, separated by commas").fill("work")
    page.keyboard.press("Enter")
    gamma = page.locator(f'.conv[data-session-id="{ids["Gamma"]}"]')
    expect(gamma.locator(".tag-chip")).to_have_text(["work"])

    # A tag too long is refused with the API's message, and the input stays to fix it.
    more(page, "Beta")
    page.get_by_role("button", name="Edit tags of Beta").click()
    beta_tags = page.get_by_label("Tags of Beta, separated by commas")
    beta_tags.fill("x" * 33)
    beta_tags.press("Enter")
    expect(page.locator("#toasts")).to_contain_text("A tag has at most 32 characters.")
    expect(beta_tags).to_have_attribute("aria-invalid", "true")
    beta_tags.press("Escape")
    expect(beta_tags).to_have_count(0)
    assert stored(ids["Beta"]) == (False, False, [])

    page.get_by_role("button", name="Show only conversations tagged work").first.click()
    links = page.locator("#conv-list .conv-link:visible")
    expect(links).to_have_text(["Gamma", "Alpha"])
    expect(page.locator("#tag-filter")).to_contain_text("Tagged work")
    expect(alpha.locator('.tag-chip[data-tag="work"]')).to_have_attribute("aria-pressed", "true")
    shot(page, "sidebar-tags")
    page.get_by_role("button", name="Show only conversations tagged ideas").click()
    expect(links).to_have_text(["Alpha"])
    page.get_by_role("button", name="Clear the tag filter").click()
    expect(links).to_have_text(["Gamma", "Beta", "Alpha"])
    expect(page.locator("#tag-filter")).to_be_hidden()

    page.reload()
    expect(alpha.locator(".tag-chip")).to_have_text(["work", "ideas"])


def test_the_keyboard_reaches_every_action(ui, tenant_a):
    ids = sessions(tenant_a, "Alpha", "Beta")
    page = ui.page()
    page.goto("/chat/")
    button = page.get_by_role("button", name="More actions for Beta", exact=True)
    button.focus()
    page.keyboard.press("Enter")
    expect(button).to_have_attribute("aria-expanded", "true")
    page.keyboard.press("Tab")
    expect(page.get_by_role("button", name="Pin Beta")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("#conv-pinned .conv-link")).to_have_text(["Beta"])
    # The focus stays on the conversation it acted on.
    expect(page.get_by_role("button", name="More actions for Beta", exact=True)).to_be_focused()
    assert stored(ids["Beta"])[0] is True

    page.keyboard.press("Enter")
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    expect(page.get_by_role("button", name="Edit tags of Beta")).to_be_focused()
    page.keyboard.press("Enter")
    page.keyboard.type("keyboard")
    page.keyboard.press("Enter")
    chip = page.get_by_role("button", name="Show only conversations tagged keyboard")
    expect(chip).to_be_visible()
    expect(page.get_by_role("button", name="Edit tags of Beta")).to_be_focused()
    chip.focus()
    page.keyboard.press("Enter")
    expect(page.locator("#conv-list .conv:visible")).to_have_count(0)
    expect(page.locator("#conv-pinned .conv-link:visible")).to_have_text(["Beta"])
    page.keyboard.press("Enter")  # the same chip again: the filter is off
    expect(page.locator("#tag-filter")).to_be_hidden()
    expect(page.locator("#conv-list .conv-link:visible")).to_have_text(["Alpha"])


def test_a_new_conversation_gets_the_actions_too(ui):
    page = ui.page()
    configure(page, max_tokens=8)
    send(page, "Plan the trip")
    expect(last_answer(page)).to_have_attribute("data-state", "done")
    more(page, "Plan the trip")
    page.get_by_role("button", name="Pin Plan the trip").click()
    expect(page.locator("#conv-pinned .conv-link")).to_have_text(["Plan the trip"])
    session_id = re.search(r"/chat/([0-9a-f-]{36})/", page.url).group(1)
    assert stored(session_id)[0] is True


def test_screens_of_the_sidebar(ui, tenant_a):
    ids = sessions(tenant_a, "Quarterly report", "Trip to Lisbon", "Recipe ideas", "Old notes")

    def organise():
        ChatSession.objects.filter(pk=ids["Trip to Lisbon"]).update(
            pinned=True, tags=["travel", "2026"]
        )
        ChatSession.objects.filter(pk=ids["Recipe ideas"]).update(tags=["home"])
        ChatSession.objects.filter(pk=ids["Quarterly report"]).update(tags=["work"])
        ChatSession.objects.filter(pk=ids["Old notes"]).update(archived=True)

    orm(organise)
    page = ui.page()
    page.goto(f"/chat/{ids['Recipe ideas']}/")
    expect(page.locator("#conv-pinned .conv-link")).to_have_text(["Trip to Lisbon"])
    expect(page.locator("#archived-toggle")).to_have_text("Archived (1)")
    more(page, "Recipe ideas")
    shot(page, "sidebar-pinned-tags")

    phone = ui.page(width=390, height=844, color_scheme="dark")
    phone.goto(f"/chat/{ids['Recipe ideas']}/")
    phone.get_by_role("button", name="Open the menu").click()
    expect(phone.locator("#conv-pinned .conv-link")).to_have_text(["Trip to Lisbon"])
    expect(phone.get_by_role("button", name="More actions for Trip to Lisbon")).to_be_visible()
    shot(phone, "sidebar-pinned-tags-phone")
