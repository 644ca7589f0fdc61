"""The organisation pages in a real browser: the switcher, API keys, usage; and the layout on a
phone and from the keyboard."""

import re
from datetime import timedelta

import httpx
import pytest
from django.utils import timezone
from playwright.sync_api import expect

from chat.models import ChatSession
from tenants.models import ApiKey, Membership, Tenant, UsageRecord
from tenants.services import membership_ensure
from tests.browser import (
    configure,
    last_answer,
    orm,
    send,
    session_id_of,
    shot,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]


def test_the_switcher_moves_between_organisations(ui, tenant_a, tenant_b):
    def make():
        membership_ensure(tenant=tenant_b, username="alice", role=Membership.Role.MEMBER)
        ChatSession.objects.create(tenant=tenant_a, model="autoglm-demo", title="Plans of A")
        ChatSession.objects.create(tenant=tenant_b, model="autoglm-demo", title="Plans of B")

    orm(make)
    page = ui.page()
    links = page.locator("#conv-list .conv-link")
    expect(links).to_have_text(["Plans of A"])
    expect(page.get_by_role("link", name="API keys")).to_be_visible()
    page.get_by_label("Organisation", exact=True).select_option(label="Tenant B")
    page.get_by_role("button", name="Switch").click()
    expect(links).to_have_text(["Plans of B"])
    expect(page.locator(".account")).to_contain_text("Member · Tenant B")
    expect(page.get_by_role("link", name="API keys")).to_have_count(0)  # a member there
    send(page, "Hello from B")
    page.wait_for_url(re.compile(r"/chat/[0-9a-f-]{36}/$"))
    session_id = session_id_of(page)
    assert orm(lambda: ChatSession.objects.get(pk=session_id).tenant_id) == tenant_b.id
    expect(last_answer(page)).to_have_attribute("data-state", "done")


def test_owners_create_copy_and_revoke_api_keys(ui, tenant_a, live_server_url):
    page = ui.page(clipboard=True)
    page.get_by_role("link", name="API keys").click()
    expect(page.get_by_role("heading", name="API keys", exact=True)).to_be_visible()
    page.get_by_label("Name", exact=True).fill("ci-pipeline")
    page.get_by_label("Expires").select_option("30")
    page.get_by_label("autoglm-demo").check()
    page.get_by_role("button", name="Create key").click()
    secret_box = page.locator("#key-secret")
    expect(secret_box).to_be_visible()
    secret = page.get_by_label("Secret key").input_value()
    assert re.fullmatch(r"sk-[A-Za-z0-9]{8}\.[A-Za-z0-9]{32}", secret)
    secret_box.get_by_role("button", name="Copy").click()
    assert page.evaluate("navigator.clipboard.readText()") == secret
    row = page.locator("#keys-body tr", has_text="ci-pipeline")
    expect(row.locator(".key-masked")).to_have_text(f"{secret.split('.')[0]}.********")
    expect(row).to_contain_text("Active")
    shot(page, "keys-created")
    stored = orm(ApiKey.objects.get, name="ci-pipeline")
    assert stored.allowed_models == ["autoglm-demo"] and stored.expiry_date is not None

    # The key works; it shows its last use; its secret is never shown again.
    use = httpx.get(
        f"{live_server_url}/api/v1/sessions", headers={"Authorization": f"Bearer {secret}"}
    )
    assert use.status_code == 200
    secret_box.get_by_role("button", name="Done").click()
    expect(secret_box).to_be_hidden()
    page.reload()
    assert secret not in page.content() and secret.split(".")[1] not in page.content()
    row = page.locator("#keys-body tr", has_text="ci-pipeline")
    expect(row.locator("td").nth(3)).to_have_text("Just now")

    row.get_by_role("button", name="Revoke").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("ci-pipeline")
    dialog.get_by_role("button", name="Revoke").click()
    expect(row.locator(".key-status")).to_have_text("Revoked")
    expect(row.get_by_role("button", name="Revoke")).to_have_count(0)
    shot(page, "keys")
    assert orm(ApiKey.objects.get, name="ci-pipeline").revoked
    refused = httpx.get(
        f"{live_server_url}/api/v1/sessions", headers={"Authorization": f"Bearer {secret}"}
    )
    assert refused.status_code == 401


def test_owners_see_the_usage_chart_and_quota(ui, tenant_a):
    def make():
        Tenant.objects.filter(pk=tenant_a.pk).update(tokens_per_month=100_000)
        today = timezone.now()
        for days_ago, prompt, completion in ((0, 1200, 3000), (0, 300, 500), (3, 800, 1200)):
            record = UsageRecord.objects.create(
                tenant=tenant_a,
                job_id=f"00000000-0000-0000-0000-{days_ago:06d}{prompt:06d}",
                model="autoglm-demo",
                status="succeeded",
                prompt_tokens=prompt,
                completion_tokens=completion,
            )
            UsageRecord.objects.filter(pk=record.pk).update(
                created_at=today - timedelta(days=days_ago)
            )

    orm(make)
    page = ui.page()
    page.get_by_role("link", name="Usage").click()
    expect(page.get_by_role("heading", name="Usage", exact=True)).to_be_visible()
    chart = page.get_by_role("img", name=re.compile("Tokens per day"))
    expect(chart).to_be_visible()
    bars = chart.locator("g.bar")
    expect(bars).to_have_count(30)
    today = bars.last
    assert today.get_attribute("data-tokens") == "5000"
    assert float(today.locator(".bar-completion").get_attribute("height")) > 0
    assert bars.nth(26).get_attribute("data-tokens") == "2000"
    assert bars.nth(0).get_attribute("data-tokens") == "0"
    month_start = timezone.now().day
    month = 5000 + (2000 if month_start > 3 else 0)
    expect(page.locator("#month-used")).to_contain_text(f"{month:,}")
    expect(page.locator("#month-quota")).to_contain_text("of the 100,000-token quota")
    expect(page.locator("#total-30")).to_contain_text("7,000")
    page.get_by_text("Show as a table").click()
    expect(page.locator("#usage-table tbody tr").first).to_contain_text("5,000")
    shot(page, "usage", full_page=True)


def test_it_fits_a_phone_and_works_from_the_keyboard(ui, tenant_a):
    orm(ChatSession.objects.create, tenant=tenant_a, model="autoglm-demo", title="On the go")
    page = ui.page(width=390, height=844, color_scheme="dark")
    sidebar = page.locator("#sidebar")
    expect(sidebar).to_be_hidden()
    menu = page.get_by_role("button", name="Open the menu")
    expect(menu).to_have_attribute("aria-expanded", "false")
    configure(page, max_tokens=24)
    send(page, "Hi from my phone")
    expect(last_answer(page)).to_have_attribute("data-state", "done")
    shot(page, "phone-chat")
    menu.click()
    expect(sidebar).to_be_visible()
    expect(menu).to_have_attribute("aria-expanded", "true")
    expect(page.get_by_role("link", name="On the go")).to_be_visible()
    page.wait_for_timeout(250)  # the slide-in transition
    shot(page, "phone-sidebar")
    page.keyboard.press("Escape")
    expect(sidebar).to_be_hidden()
    expect(menu).to_be_focused()

    # Keyboard only, on a desktop window: the skip link, then through the sidebar.
    desk = ui.page(color_scheme="dark")
    desk.goto("/org/usage/")
    desk.keyboard.press("Tab")
    skip = desk.get_by_role("link", name="Skip to content")
    expect(skip).to_be_focused()
    expect(skip).to_be_visible()
    # The newest conversation comes first, after the search button.
    for role, name in (
        ("link", "autoglm"),
        ("link", "New chat"),
        ("button", "Search"),
        ("link", "Hi from my phone"),
    ):
        desk.keyboard.press("Tab")
        expect(desk.get_by_role(role, name=name, exact=True)).to_be_focused()
    desk.keyboard.press("F2")  # rename from the keyboard
    rename = desk.get_by_label("New name of the conversation")
    expect(rename).to_be_focused()
    rename.fill("On the road")
    rename.press("Enter")
    link = desk.get_by_role("link", name="On the road", exact=True)
    expect(link).to_be_focused()
    desk.keyboard.press("Enter")
    expect(desk).to_have_url(re.compile(r"/chat/[0-9a-f-]{36}/$"))
    expect(desk.get_by_label("Message", exact=True)).to_be_focused()
    shot(desk, "chat-dark")
