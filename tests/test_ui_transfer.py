"""Export and import in a real browser: the chat header's Export menu downloads the
conversation, the sidebar's Import brings the file back as an identical conversation, and
ChatGPT's export imports into conversations that show their messages."""

import json
import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

from chat.models import ChatSession
from tests.browser import configure, last_answer, orm, send, session_id_of, shot
from tests.test_transfer import FIXTURE, branched, current_index, tree_of

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]


def import_file(page, files) -> None:
    with page.expect_file_chooser() as chooser:
        page.get_by_role("button", name="Import", exact=True).click()
    chooser.value.set_files(files)


def test_it_exports_a_conversation_and_imports_it_back(ui, tenant_a, tmp_path):
    source = orm(branched, tenant_a)
    page = ui.page()
    page.goto(f"/chat/{source.id}/")
    toggle = page.get_by_role("button", name="Export")
    expect(toggle).to_have_attribute("aria-expanded", "false")

    # The keyboard works the menu: down opens it on its first item, Escape closes it.
    toggle.focus()
    page.keyboard.press("ArrowDown")
    json_item = page.get_by_role("menuitem", name=re.compile("^JSON"))
    expect(json_item).to_be_focused()
    page.keyboard.press("ArrowDown")
    expect(page.get_by_role("menuitem", name=re.compile("^Markdown"))).to_be_focused()
    shot(page, "export-menu")
    page.keyboard.press("Escape")
    expect(json_item).to_be_hidden()
    expect(toggle).to_be_focused()
    expect(toggle).to_have_attribute("aria-expanded", "false")
    toggle.click()
    expect(json_item).to_be_visible()
    page.keyboard.press("Tab")  # focus moves on: the menu closes
    expect(json_item).to_be_hidden()

    toggle.click()
    with page.expect_download() as download:
        json_item.click()
    assert download.value.suggested_filename.startswith("autoglm-branches-")
    saved = tmp_path / download.value.suggested_filename
    download.value.save_as(saved)
    document = json.loads(saved.read_text())
    assert len(document["conversations"][0]["messages"]) == 6
    expect(json_item).to_be_hidden()

    toggle.click()
    with page.expect_download() as markdown:
        page.get_by_role("menuitem", name=re.compile("^Markdown")).click()
    text = Path(markdown.value.path()).read_text()
    assert text.startswith("# Branches") and "## Assistant\n\nWhy did the chicken" in text

    import_file(page, saved)
    page.wait_for_url(lambda url: "/chat/" in url and str(source.id) not in url)
    expect(page.locator("#toasts")).to_contain_text("Imported 1 conversation from autoglm-")
    copy = orm(ChatSession.objects.get, pk=session_id_of(page))
    assert orm(tree_of, copy) == orm(tree_of, source)
    assert orm(current_index, copy) == orm(current_index, source)
    # The page shows the branch that was shown, and the sidebar has both conversations, pinned
    # (the source was, and the copy keeps it).
    expect(page.locator("#thread .msg")).to_have_count(4)
    expect(page.locator("#thread .msg").last).to_contain_text("Why did the chicken")
    expect(page.locator("#conv-pinned .conv")).to_have_count(2)
    expect(page.locator("#conv-pinned .conv.is-current")).to_contain_text("Branches")


def test_it_imports_chatgpts_export_and_shows_its_messages(ui, tenant_a):
    page = ui.page()
    expect(page.get_by_role("button", name="Export")).to_be_hidden()  # no conversation yet
    import_file(page, FIXTURE)
    page.wait_for_url(re.compile(r"/chat/[0-9a-f-]{36}/$"))
    expect(page.locator("#toasts")).to_contain_text("Imported 2 conversations")
    thread = page.locator("#thread")
    expect(thread.locator(".msg")).to_have_count(2)
    expect(thread).to_contain_text("What is in this picture?")
    expect(thread).to_contain_text("A cat on a windowsill.")

    page.locator("#conv-list").get_by_role("link", name="Lisbon day trip").click()
    expect(thread.locator(".msg")).to_have_count(4)
    expect(thread.locator(".msg").last).to_contain_text("Take tram 15E")
    expect(thread).not_to_contain_text("Where should I eat?")  # the branch not shown
    expect(thread).not_to_contain_text("15E runs along the river")  # a tool's node
    shot(page, "import-chatgpt")


def test_it_offers_the_export_once_a_new_chat_has_begun(ui, tenant_a):
    page = ui.page()
    toggle = page.get_by_role("button", name="Export")
    expect(toggle).to_be_hidden()
    configure(page, max_tokens=8)
    send(page, "Hello there")
    expect(last_answer(page)).to_have_attribute("data-state", "done")
    expect(toggle).to_be_visible()
    toggle.click()
    with page.expect_download() as download:
        page.get_by_role("menuitem", name=re.compile("^JSON")).click()
    assert f"/api/v1/sessions/{session_id_of(page)}/export" in download.value.url
    [conversation] = json.loads(Path(download.value.path()).read_text())["conversations"]
    assert conversation["title"] == "Hello there"
    messages = conversation["messages"]
    assert [(m["role"], m["content"]) for m in messages][0] == ("user", "Hello there")
    assert [m["role"] for m in messages] == ["user", "assistant"]


def test_it_says_what_is_wrong_with_a_bad_file(ui, tenant_a):
    page = ui.page()
    import_file(page, {"name": "notes.json", "mimeType": "application/json", "buffer": b"[1]"})
    expect(page.locator("#toasts")).to_contain_text("Could not import notes.json")
    expect(page.locator("#toasts")).to_contain_text("[0] must be an object")
    expect(page).to_have_url(re.compile(r"/chat/$"))
    expect(page.get_by_role("button", name="Import", exact=True)).to_be_focused()
    assert not orm(ChatSession.objects.filter(tenant=tenant_a).exists)


def test_it_fits_a_phone_and_the_dark_scheme(ui, tenant_a):
    source = orm(branched, tenant_a)
    page = ui.page(width=390, height=844)
    page.goto(f"/chat/{source.id}/")
    page.get_by_role("button", name="Export").click()
    menu = page.get_by_role("menu")
    expect(menu).to_be_visible()
    box = menu.bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= 390, box
    shot(page, "export-menu-phone")
    page.keyboard.press("Escape")
    page.get_by_role("button", name="Open the menu").click()
    expect(page.get_by_role("link", name="Export all")).to_be_visible()
    expect(page.get_by_role("button", name="Import", exact=True)).to_be_visible()
    shot(page, "transfer-sidebar-phone")

    dark = ui.page(color_scheme="dark")
    dark.goto(f"/chat/{source.id}/")
    dark.get_by_role("button", name="Export").click()
    expect(dark.get_by_role("menu")).to_be_visible()
    shot(dark, "export-menu-dark")
    with dark.expect_download() as download:
        dark.get_by_role("link", name="Export all").click()
    assert download.value.suggested_filename.startswith("autoglm-tenant-a-")
