"""The admin's Workers page (issue 15): the live workers with their models, jobs, batch
occupancy and last heartbeat, and each model's queue, read from Redis; for staff only."""

import re

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from chat.worker_registry import live_workers

from .conftest import STAND_IN_WORKER

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator() -> Client:
    user = get_user_model().objects.create_superuser("operator", "op@example.com", "op-pw")
    client = Client()
    client.force_login(user)
    return client


def test_it_lists_the_live_workers_and_the_queues(celery_worker, operator):
    index = operator.get("/admin/").content.decode()
    assert 'href="/admin/workers/"' in index

    page = operator.get("/admin/workers/")
    assert page.status_code == 200
    html = page.content.decode()
    real = [info for info in live_workers() if info.id != STAND_IN_WORKER]
    assert real, "the test worker should be beating"
    for info in real:
        assert info.id in html
    row = re.search(rf"<tr>\s*<td>{re.escape(real[0].id)}</td>(.*?)</tr>", html, re.S)
    assert row is not None, html
    cells = re.findall(r"<td>(.*?)</td>", row.group(1), re.S)
    models, running, batch, _kv, heartbeat = (re.sub(r"\s+", " ", c).strip() for c in cells)
    assert models == "autoglm-demo"
    assert running == "0 / 4"  # the test worker runs four job threads
    assert batch == "autoglm-demo: 0 / 32"
    assert re.fullmatch(r"\d+\.\d s ago", heartbeat)
    assert float(heartbeat.split()[0]) < 3  # it beats every second in the tests
    for model in ("autoglm-demo", "autoglm-idle"):
        assert f"<td>{model}</td>" in html


def test_it_is_for_staff_only(tenant_a):
    member = Client()
    assert member.login(username="alice", password="alice-pw")
    response = member.get("/admin/workers/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_it_shows_the_plugins_and_their_state(operator, monkeypatch):
    from autoglm_site import plugins

    host = plugins.PluginHost()

    class Guard:
        name, required = "guard", True

        def start(self):
            raise RuntimeError("no patterns file")

    host.register(Guard(), "tests:Guard")
    host.initialize({})
    host.start()
    monkeypatch.setattr(plugins, "_host", host)
    html = operator.get("/admin/workers/").content.decode()
    row = re.search(r'<table id="plugins">.*?</table>', html, re.S).group(0)
    cells = [re.sub(r"\s+", " ", c).strip() for c in re.findall(r"<td>(.*?)</td>", row, re.S)]
    assert cells == ["guard", "failed", "yes", "tests:Guard", "RuntimeError: no patterns file"]
