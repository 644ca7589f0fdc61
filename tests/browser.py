"""Helpers of the browser tests: real headless Chromium (Debian's, driven by the playwright
package) against the real stack (uvicorn on the test database, a Celery worker, the demo model).

Screenshots of the main screens are saved under test-artifacts/ui/ (git-ignored).

Playwright's sync API keeps an asyncio loop running in this thread, which Django's ORM refuses
to run under; the tests reach the database through ``orm()`` (a short-lived thread) instead.
The ``ui`` fixture (tests/conftest.py) starts one Chromium per test.
"""

import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from django.db import connections
from playwright.sync_api import Page, expect

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
    # After a resize the phone's sidebar slides shut: wait for such transitions to end, so the
    # picture is not of it moving (the streaming cursor's animations never end; not those).
    page.wait_for_function(
        "() => document.getAnimations().every(a => !(a instanceof CSSTransition)"
        " || a.playState !== 'running')"
    )
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), **kwargs)


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
