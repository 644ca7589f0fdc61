import asyncio
import atexit
import multiprocessing
import os
import shutil
import tempfile
from pathlib import Path


def _share_metrics_between_web_processes() -> None:
    """The web processes of one server add up their metrics in one directory (prometheus_client's
    multiprocess mode), named after the server: uvicorn's ``--workers`` are children of one
    master. It must be chosen before prometheus_client is imported. Directories of servers that
    have stopped are removed, so a restart starts from zero. An operator's own
    PROMETHEUS_MULTIPROC_DIR (gunicorn, which forks its workers) is kept as it is."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return
    parent = multiprocessing.parent_process()
    server = parent.pid if parent is not None else os.getpid()
    base = Path(tempfile.gettempdir()) / "autoglm-metrics"
    for stale in base.glob("web-*"):
        pid = stale.name.removeprefix("web-")
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    directory = base / f"web-{server}"
    directory.mkdir(parents=True, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, another user's
    return True


_share_metrics_between_web_processes()

from django.core.asgi import get_asgi_application  # noqa: E402

from autoglm_site.plugins import start_plugins, stop_plugins  # noqa: E402
from autoglm_site.telemetry import configure_tracing  # noqa: E402

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "autoglm_site.settings")

# Before the app loads its middleware: Django's instrumentation adds its own to the list.
configure_tracing("web")
django_application = get_asgi_application()
# Plugins start once the app is loaded. They stop at the ASGI lifespan's shutdown (uvicorn sends
# it on SIGTERM and Ctrl-C, then exits by the signal, which skips atexit), or at a normal exit.
start_plugins()
atexit.register(stop_plugins)


async def application(scope, receive, send):
    """Django's ASGI app, with the lifespan protocol (which Django does not speak) answered
    here: its shutdown stops the plugins."""
    if scope["type"] != "lifespan":
        return await django_application(scope, receive, send)
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await asyncio.to_thread(stop_plugins)
            await send({"type": "lifespan.shutdown.complete"})
            return
