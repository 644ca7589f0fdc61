"""The plugin host (issue 16, its first part): plugins found through the ``autoglm.plugins``
entry points of an installed package and through AUTOGLM_PLUGINS, configured from their own
setting, started, and stopped in reverse order; a bad configuration stops start-up naming the
plugin; a plugin that fails to start is left ``failed``; a required one that is not running
fails /readyz."""

import json
import sys
import textwrap

import httpx
import pytest

from autoglm_site.env import ConfigError
from autoglm_site.plugins import PluginHost, State, config_variable, discover
from devtools.processes import Process, free_port


class Recording:
    """A plugin that writes down what the host does to it."""

    def __init__(self, name: str, log: list, fail_on: str = ""):
        self.name, self.log, self.fail_on = name, log, fail_on

    def configure(self, config: dict) -> None:
        if "bad" in config:
            raise ValueError("'bad' is not an option")
        self.log.append((self.name, "configure", config))

    def start(self) -> None:
        if self.fail_on == "start":
            raise RuntimeError("cannot reach its service")
        self.log.append((self.name, "start"))

    def stop(self) -> None:
        self.log.append((self.name, "stop"))


def test_it_takes_plugins_through_their_lifecycle_and_stops_them_in_reverse():
    log: list = []
    host = PluginHost()
    for name in ("first", "broken", "last"):
        host.register(Recording(name, log, fail_on="start" if name == "broken" else ""), "test")
    assert [entry.state for entry in host.plugins] == [State.REGISTERED] * 3
    host.initialize({config_variable("first"): '{"level": 2}'})
    assert [entry.state for entry in host.plugins] == [State.INITIALIZED] * 3
    host.start()
    states = {entry.name: entry.state for entry in host.plugins}
    assert states == {"first": State.RUNNING, "broken": State.FAILED, "last": State.RUNNING}
    assert "cannot reach its service" in host.plugins[1].error
    assert [plugin.name for plugin in host.running()] == ["first", "last"]
    host.stop()
    assert log == [
        ("first", "configure", {"level": 2}),
        ("broken", "configure", {}),
        ("last", "configure", {}),
        ("first", "start"),
        ("last", "start"),
        ("last", "stop"),  # reverse order, and never the plugin that did not start
        ("first", "stop"),
    ]
    assert host.plugins[1].state == State.FAILED


@pytest.mark.parametrize("raw", ['{"bad": 1}', "not json", "[1, 2]"])
def test_a_bad_configuration_stops_start_up_naming_the_plugin(raw):
    host = PluginHost()
    host.register(Recording("guard-rail", []), "test")
    with pytest.raises(ConfigError, match="guard-rail") as refused:
        host.initialize({"AUTOGLM_PLUGIN_GUARD_RAIL": raw})
    assert "AUTOGLM_PLUGIN_GUARD_RAIL" in str(refused.value)


def test_names_must_be_plain_and_unique():
    host = PluginHost()
    host.register(Recording("one", []), "a")
    with pytest.raises(ConfigError, match="two plugins"):
        host.register(Recording("one", []), "b")
    with pytest.raises(ConfigError, match="name"):
        host.register(Recording("Has Spaces", []), "c")


def test_autoglm_plugins_names_plugins_by_dotted_path():
    found = discover({"AUTOGLM_PLUGINS": "tests.test_plugins:make_listed"})
    assert [(plugin.name, source) for plugin, source in found if plugin.name == "listed"] == [
        ("listed", "tests.test_plugins:make_listed")
    ]
    with pytest.raises(ConfigError, match="cannot be imported"):
        discover({"AUTOGLM_PLUGINS": "tests.no_such_module:Plugin"})


def make_listed():
    return Recording("listed", [])


# A real package on a path entry: its dist-info declares the entry point, as `pip install`
# would write it.
PACKAGE = """
import json, pathlib

class MarkerPlugin:
    name = "marker"
    required = True

    def configure(self, config):
        if "dir" not in config:
            raise ValueError("needs 'dir'")
        self.dir = pathlib.Path(config["dir"])
        self.fail = config.get("fail", False)

    def start(self):
        if self.fail:
            raise RuntimeError("refuses to start")
        (self.dir / "started").write_text("yes")

    def stop(self):
        (self.dir / "stopped").write_text("yes")
"""


def installed_package(root) -> None:
    (root / "autoglm_marker_plugin").mkdir()
    (root / "autoglm_marker_plugin" / "__init__.py").write_text(textwrap.dedent(PACKAGE))
    info = root / "autoglm_marker_plugin-1.0.dist-info"
    info.mkdir()
    info.joinpath("METADATA").write_text(
        "Metadata-Version: 2.1\nName: autoglm-marker-plugin\nVersion: 1.0\n"
    )
    info.joinpath("entry_points.txt").write_text(
        "[autoglm.plugins]\nmarker = autoglm_marker_plugin:MarkerPlugin\n"
    )


def web_with_plugin(celery_worker, tmp_path, config: dict) -> tuple[Process, str]:
    installed_package(tmp_path)
    env = {
        **celery_worker.env,
        "PYTHONPATH": f"{tmp_path}:{celery_worker.env.get('PYTHONPATH', '')}",
        "AUTOGLM_PLUGIN_MARKER": json.dumps(config),
        "AUTOGLM_READY_MODELS": "autoglm-demo",
    }
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "autoglm_site.asgi:application"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--lifespan", "on"]
    web = Process(command, env=env, log=tmp_path / "web.log").start()
    return web, f"http://127.0.0.1:{port}"


@pytest.mark.django_db(transaction=True)
def test_an_installed_plugin_is_found_started_and_stopped_by_the_web(celery_worker, tmp_path):
    web, base = web_with_plugin(celery_worker, tmp_path, {"dir": str(tmp_path)})
    try:
        web.wait_for_port(int(base.rsplit(":", 1)[1]), 30)
        ready = httpx.get(f"{base}/readyz", timeout=10).json()
        assert ready["checks"]["plugin:marker"] == "ok: running", ready
        assert (tmp_path / "started").exists() and not (tmp_path / "stopped").exists()
        # SIGTERM: uvicorn shuts down (the lifespan's shutdown stops the plugins), then exits
        # by the signal.
        web.proc.terminate()
        web.proc.wait(20)
    finally:
        web.stop()
    assert (tmp_path / "stopped").read_text() == "yes"


@pytest.mark.django_db(transaction=True)
def test_a_required_plugin_that_fails_to_start_fails_readyz(celery_worker, tmp_path):
    web, base = web_with_plugin(celery_worker, tmp_path, {"dir": str(tmp_path), "fail": True})
    try:
        web.wait_for_port(int(base.rsplit(":", 1)[1]), 30)
        response = httpx.get(f"{base}/readyz", timeout=10)
        assert response.status_code == 503
        assert response.json()["checks"]["plugin:marker"] == "down: failed"
        assert not (tmp_path / "started").exists()
    finally:
        web.stop()
    assert not (tmp_path / "stopped").exists()  # a plugin that never ran is not stopped


@pytest.mark.django_db(transaction=True)
def test_a_bad_plugin_configuration_stops_the_web_from_starting(celery_worker, tmp_path):
    web, _ = web_with_plugin(celery_worker, tmp_path, {"no-dir": True})
    web.proc.wait(30)
    assert web.proc.returncode != 0
    log = (tmp_path / "web.log").read_text()
    assert "plugin 'marker'" in log and "AUTOGLM_PLUGIN_MARKER" in log


@pytest.mark.django_db
def test_plugins_are_told_when_a_job_ends_and_one_that_raises_harms_nothing(
    client_a, monkeypatch, django_capture_on_commit_callbacks
):
    from autoglm_site import plugins
    from chat.jobs import job_cancel
    from chat.models import ChatJob

    seen = []

    class Listener:
        name = "listener"

        def job_ended(self, event):
            seen.append(event)

    class Broken:
        name = "broken"

        def job_ended(self, event):
            raise RuntimeError("its webhook receiver is down")

    host = PluginHost()
    host.register(Broken(), "test")
    host.register(Listener(), "test")
    host.initialize({})
    host.start()
    monkeypatch.setattr(plugins, "_host", host)
    session = client_a.post("/api/v1/sessions", {"model": "autoglm-idle"}, format="json").json()
    client_a.post(f"/api/v1/sessions/{session['id']}/messages", {"content": "hi"}, format="json")
    with django_capture_on_commit_callbacks(execute=True):
        job_cancel(job=ChatJob.objects.get())
    assert [(e.tenant, e.model, e.status, e.finish_reason) for e in seen] == [
        ("tenant-a", "autoglm-idle", "cancelled", "cancelled")
    ]


class Suffix:
    """A stage that appends its name to the request's message and to the answer."""

    def __init__(self, name: str):
        self.name = name

    def before_admission(self, admission):
        admission.messages[-1]["content"] += f"+{self.name}"
        return admission

    def answer_stage(self, answer):
        from autoglm_site.plugins import AnswerStage

        name = self.name

        class Stage(AnswerStage):
            def finish(self) -> str:
                return f"+{name}"

        return Stage()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "order, suffix", [([], "+a+b"), (["b", "a"], "+b+a"), (["b"], "+b"), (["gone", "a"], "+a")]
)
def test_stages_run_in_the_tenant_s_order_where_its_settings_give_one(
    client_a, tenant_a, monkeypatch, order, suffix
):
    from autoglm_site import plugins
    from chat.models import ChatJob, Message
    from workers.answer_stages import AnswerPipeline

    host = PluginHost()
    for name in ("a", "b"):
        host.register(Suffix(name), "test")
    host.initialize({})
    host.start()
    monkeypatch.setattr(plugins, "_host", host)
    tenant_a.plugin_stages = order
    tenant_a.save()
    session = client_a.post("/api/v1/sessions", {"model": "autoglm-idle"}, format="json").json()
    sent = client_a.post(
        f"/api/v1/sessions/{session['id']}/messages", {"content": "hi"}, format="json"
    )
    assert sent.status_code == 202, sent.content
    assert Message.objects.get(role="user").content == "hi" + suffix
    answer = AnswerPipeline(ChatJob.objects.select_related("tenant").get())
    answer.feed("ok")
    answer.finish()
    assert answer.text == "ok" + suffix


def test_a_tenant_s_stage_order_is_a_list_of_names():
    from django.core.exceptions import ValidationError

    from tenants.models import validate_plugin_names

    validate_plugin_names(["guardrail", "webhooks"])
    for bad in ["guardrail", [""], [1], {"a": 1}]:
        with pytest.raises(ValidationError):
            validate_plugin_names(bad)
