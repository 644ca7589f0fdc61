"""The plugin host: finds plugins, takes each through ``registered -> initialized -> running ->
stopped`` (or ``failed``), and says where each stands.

A plugin is an object with a ``name`` and, all optional, ``configure(config)``, ``start()`` and
``stop()``; ``required = True`` makes ``/readyz`` fail while it is not running. Plugins come
from the entry-point group ``autoglm.plugins`` of installed packages and from AUTOGLM_PLUGINS
(dotted paths, ``package.module:attribute``); an entry names a plugin object, a class or a
factory (called with no argument). A plugin's configuration is the JSON object in
``AUTOGLM_PLUGIN_<NAME>`` (its name upper-cased, other characters as ``_``).

- A configuration the plugin refuses (``configure`` raises) stops start-up with a message that
  names the plugin: a misconfigured deployment must not serve.
- A plugin that raises while starting is logged and left ``failed``; ``stop`` is not called on
  it, and nothing of it runs.
- Running plugins stop in the reverse of their start order; a failure to stop is logged.
"""

from __future__ import annotations

import enum
import importlib
import json
import logging
import os
import re
import threading
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

from .env import ConfigError

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "autoglm.plugins"


class State(enum.StrEnum):
    REGISTERED = "registered"
    INITIALIZED = "initialized"
    RUNNING = "running"
    STOPPED = "stopped"
    FAILED = "failed"


@dataclass
class Registered:
    """One plugin in the host, with where it stands and, once failed, why."""

    plugin: Any
    source: str  # the entry point or dotted path it came from
    state: State = State.REGISTERED
    error: str = ""

    @property
    def name(self) -> str:
        return self.plugin.name

    @property
    def required(self) -> bool:
        return bool(getattr(self.plugin, "required", False))


@dataclass
class PluginHost:
    plugins: list[Registered] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def register(self, plugin: Any, source: str) -> Registered:
        name = getattr(plugin, "name", None)
        if not isinstance(name, str) or not re.fullmatch(r"[a-z][a-z0-9_-]{0,63}", name):
            raise ConfigError(
                f"plugin from {source!r} needs a name of lower-case letters, digits, - or _ "
                f"(got {name!r})"
            )
        if any(entry.name == name for entry in self.plugins):
            raise ConfigError(f"two plugins are named {name!r} (the second from {source!r})")
        entry = Registered(plugin, source)
        self.plugins.append(entry)
        return entry

    def initialize(self, environ: dict[str, str]) -> None:
        """Give each plugin its configuration; a refused one stops start-up."""
        for entry in self.plugins:
            config = plugin_config(entry.name, environ)
            configure = getattr(entry.plugin, "configure", None)
            try:
                if configure is not None:
                    configure(config)
            except Exception as exc:
                raise ConfigError(
                    f"plugin {entry.name!r}: its configuration ({config_variable(entry.name)}) "
                    f"is invalid: {exc}"
                ) from exc
            entry.state = State.INITIALIZED

    def start(self) -> None:
        for entry in self.plugins:
            if entry.state != State.INITIALIZED:
                continue
            try:
                start = getattr(entry.plugin, "start", None)
                if start is not None:
                    start()
            except Exception as exc:
                entry.state, entry.error = State.FAILED, f"{type(exc).__name__}: {exc}"
                logger.exception("plugin failed to start", extra={"plugin": entry.name})
                continue
            entry.state = State.RUNNING
            logger.info("plugin running", extra={"plugin": entry.name, "source": entry.source})

    def stop(self) -> None:
        with self._lock:
            running = [entry for entry in self.plugins if entry.state == State.RUNNING]
            for entry in reversed(running):
                try:
                    stop = getattr(entry.plugin, "stop", None)
                    if stop is not None:
                        stop()
                except Exception:
                    logger.exception("plugin failed to stop", extra={"plugin": entry.name})
                entry.state = State.STOPPED

    def running(self) -> list[Any]:
        """The running plugins' objects, in start order."""
        return [entry.plugin for entry in self.plugins if entry.state == State.RUNNING]

    def stages(self, order: list[str] | None = None) -> list[Any]:
        """The plugins a request's stages go through: those named in ``order`` (a tenant's
        ``plugin_stages``), in that order, the ones not running left out; with no order, every
        running plugin in start order."""
        running = {plugin.name: plugin for plugin in self.running()}
        if not order:
            return list(running.values())
        return [running[name] for name in dict.fromkeys(order) if name in running]


def config_variable(name: str) -> str:
    return "AUTOGLM_PLUGIN_" + re.sub(r"[^A-Z0-9]", "_", name.upper())


def plugin_config(name: str, environ: dict[str, str]) -> dict:
    variable = config_variable(name)
    raw = environ.get(variable, "").strip()
    if not raw:
        return {}
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"plugin {name!r}: {variable} is not JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise ConfigError(f"plugin {name!r}: {variable} must be a JSON object")
    return config


def discover(environ: dict[str, str]) -> list[tuple[Any, str]]:
    """The plugins to load, with where each came from: the installed packages' entry points,
    then AUTOGLM_PLUGINS, in the order given."""
    found = [
        (_instance(entry.load(), entry.value), f"entry point {entry.value}")
        for entry in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name)
    ]
    for path in filter(None, (p.strip() for p in environ.get("AUTOGLM_PLUGINS", "").split(","))):
        found.append((_instance(_import(path), path), path))
    return found


def _import(path: str) -> Any:
    module_name, _, attribute = path.partition(":")
    if not attribute:
        module_name, _, attribute = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(
            f"AUTOGLM_PLUGINS names {path!r}, which cannot be imported: {exc}"
        ) from exc


def _instance(target: Any, source: str) -> Any:
    """An entry names a plugin, or a class or factory that makes one."""
    if isinstance(target, type) or (callable(target) and not hasattr(target, "name")):
        try:
            return target()
        except Exception as exc:
            raise ConfigError(f"plugin {source!r} could not be made: {exc}") from exc
    return target


_host = PluginHost()


def host() -> PluginHost:
    return _host


def start_plugins(environ: dict[str, str] | None = None) -> PluginHost:
    """Load, configure and start this process's plugins, once (a second call changes nothing)."""
    environ = dict(os.environ if environ is None else environ)
    with _host._lock:
        if _host.plugins:
            return _host
        for plugin, source in discover(environ):
            _host.register(plugin, source)
        _host.initialize(environ)
    _host.start()
    return _host


def stop_plugins() -> None:
    _host.stop()


# -- the hook points: a plugin defines the methods it needs --------------------------------------
#
#   before_admission(admission: Admission) -> Admission | None
#       see and rewrite a request's messages and parameters before it is admitted (None: as it
#       is), or raise PluginRefusal to refuse it (400 in the error shape, with the plugin's code);
#   answer_stage(answer: AnswerContext) -> AnswerStage | None
#       a stage the answer's text goes through, chunk by chunk, on the worker (the stream and the
#       stored answer are what it gives out);
#   job_ended(event: JobEnded) -> None
#       told when a job ends (succeeded, failed, cancelled), with its usage.
#
# Stages (before_admission, answer_stage) run in the plugins' start order, or in the order of
# the tenant's plugin_stages setting, which may also leave plugins out; job_ended reaches every
# running plugin. A hook that raises anything else fails its request
# with the code plugin_error and is logged with the plugin's name; the process carries on.


class PluginRefusal(Exception):
    """Raised by ``before_admission`` to refuse a request: 400 with ``code``."""

    def __init__(self, message: str, *, code: str = "request_refused") -> None:
        super().__init__(message)
        self.message, self.code = message, code


@dataclass
class Admission:
    tenant: str  # the tenant's slug
    model: str
    messages: list[dict[str, str]]  # {"role", "content"}, the prompt's messages
    params: dict[str, Any]  # temperature, top_p, max_tokens, stop, seed


@dataclass(frozen=True)
class AnswerContext:
    job_id: str
    tenant: str
    model: str


class AnswerStage:
    """What ``answer_stage`` returns: ``feed`` takes the next chunk of text and gives out what
    may go on now (it may hold some back); ``finish`` gives out what it still holds."""

    def feed(self, text: str) -> str:
        return text

    def finish(self) -> str:
        return ""


@dataclass(frozen=True)
class JobEnded:
    job_id: str
    tenant: str
    model: str
    status: str  # succeeded, failed, cancelled
    finish_reason: str  # stop, length, cancelled; or a failed job's error code
    prompt_tokens: int
    completion_tokens: int
    session_id: str | None = None  # None for an OpenAI-style completion
    callback_url: str = ""  # the native job's, if it asked for one
    error: str = ""  # a failed job's message
