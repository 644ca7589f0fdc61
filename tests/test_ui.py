"""The browser UI in real headless Chromium (Debian's, driven by the playwright package) against
the real stack: uvicorn on the test database, a Celery worker and the demo model.

Screenshots of the main screens are saved under test-artifacts/ui/ (git-ignored).

Playwright's sync API keeps an asyncio loop running in this thread, which Django's ORM refuses
to run under; the tests reach the database through ``orm()`` (a short-lived thread) instead.
"""

import re
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from django.db import connections
from django.utils import timezone
from playwright.sync_api import Page, expect, sync_playwright

from chat.models import ChatJob, ChatSession, Message
from tenants.models import ApiKey, Membership, Tenant, UsageRecord
from tenants.services import membership_ensure

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts" / "ui"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LONG = 1500  # "Write an essay about the sea." at temperature 0 fills all of it (about 2 s)
ESSAY = "Write an essay about the sea."
HOSTILE = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>'
TIMEOUT = 30_000


def orm(fn, *args, **kwargs):
    """Run a database call in a thread of its own (no event loop there), then close its
    connection so nothing lingers into the flush after the test."""

    def call():
        try:
            return fn(*args, **kwargs)
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(call).result()


class Browser:
    """One Chromium per test; pages signed in through the real login form."""

    def __init__(self, browser, base_url: str):
        self.browser = browser
        self.base_url = base_url
        self.problems: list[str] = []

    def page(
        self,
        username: str | None = "alice",
        *,
        width: int = 1280,
        height: int = 860,
        color_scheme: str = "light",
        clipboard: bool = False,
    ) -> Page:
        context = self.browser.new_context(
            base_url=self.base_url,
            viewport={"width": width, "height": height},
            color_scheme=color_scheme,
        )
        if clipboard:
            context.grant_permissions(["clipboard-read", "clipboard-write"], origin=self.base_url)
        page = context.new_page()
        page.set_default_timeout(TIMEOUT)
        page.on("pageerror", lambda error: self.problems.append(f"uncaught: {error}"))
        page.on("console", self._console)
        if username:
            sign_in(page, username, f"{username}-pw")
        return page

    def _console(self, message) -> None:
        if "Content Security Policy" in message.text or "SyntaxError" in message.text:
            self.problems.append(f"console: {message.text}")


def sign_in(page: Page, username: str, password: str) -> None:
    page.goto("/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r"/chat/$"))


def shot(page: Page, name: str, **kwargs) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), **kwargs)


@pytest.fixture
def ui(live_server_url, tenant_a, tenant_b):
    """Chromium, started after the data fixtures (their ORM calls need no running loop)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        session = Browser(browser, live_server_url)
        try:
            yield session
        finally:
            browser.close()
    assert not session.problems, session.problems


def configure(page: Page, *, model=None, temperature=None, max_tokens=None, system_prompt=None):
    """Set the conversation's model and parameters in the settings panel."""
    page.get_by_role("button", name=re.compile("autoglm")).click()
    panel = page.locator("#settings")
    expect(panel).to_be_visible()
    if model is not None:
        panel.get_by_label("Model").select_option(model)
    if temperature is not None:
        slider = panel.get_by_label("Temperature")
        slider.focus()
        page.keyboard.press("Home")  # the keyboard works the slider: Home is 0
        for _ in range(round(temperature * 10)):
            page.keyboard.press("ArrowRight")
    if max_tokens is not None:
        panel.get_by_label("Max tokens").fill(str(max_tokens))
    if system_prompt is not None:
        panel.get_by_label("System prompt").fill(system_prompt)
    panel.locator("#settings-save").click()
    expect(panel).to_be_hidden()


def send(page: Page, text: str) -> None:
    box = page.get_by_label("Message", exact=True)
    box.fill(text)
    box.press("Enter")


def last_answer(page: Page):
    return page.locator("#thread .msg-assistant").last


def answer_text(page: Page) -> str:
    return last_answer(page).locator(".msg-body").inner_text()


def wait_for_text(page: Page) -> str:
    """Wait until the answer being generated shows some text; returns its job id."""
    answer = last_answer(page)
    expect(answer.locator(".msg-body")).not_to_be_empty(timeout=TIMEOUT)
    return answer.get_attribute("data-job-id")


def session_id_of(page: Page) -> str:
    return re.search(r"/chat/([0-9a-f-]{36})/", page.url).group(1)


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
    assert [m.role for m in messages] == ["user", "assistant"]
    assert messages[0].content == ESSAY and messages[1].id != old
    assert answer.get_attribute("data-message-id") == str(messages[1].id)
    new_job = orm(ChatJob.objects.get, assistant_message_id=messages[1].id)
    assert new_job.params["max_tokens"] == 16 and new_job.completion_tokens <= 16
    expect(page.locator("#thread .msg")).to_have_count(2)


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
        Message.objects.create(tenant=tenant_a, session=session, role="user", content=HOSTILE)
        Message.objects.create(
            tenant=tenant_a, session=session, role="assistant", content=assistant
        )
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
    for name in ("autoglm", "New chat", "Hi from my phone"):  # the newest conversation first
        desk.keyboard.press("Tab")
        expect(desk.get_by_role("link", name=name, exact=True)).to_be_focused()
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
