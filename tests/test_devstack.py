"""`make run` smoke test: start the stack exactly as `make run` does (embedded SQLite, a local
Redis, the real SmolLM2), get a real answer through the API with the printed key, then Ctrl-C
it."""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest
from django.conf import settings

from devtools.processes import ROOT, free_port, port_open

pytestmark = pytest.mark.e2e


def test_it_runs_the_stack_and_answers_in_english(tmp_path):
    port, redis_port = free_port(), free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "REDIS_URL", "SECRET_KEY", "AUTOGLM_MODELS")
    }
    env.update(
        PORT=str(port),
        AUTOGLM_REDIS_PORT=str(redis_port),
        AUTOGLM_DATA_DIR=str(tmp_path / "data"),
        AUTOGLM_TORCH_THREADS="1",
        # The checkout's converted copy of SmolLM2, shared with the other tests and make run.
        AUTOGLM_MODEL_CACHE=str(settings.AUTOGLM_MODEL_CACHE),
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "devtools.devstack"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        key = None
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and key is None:
            match = re.search(r"API key:\s+(sk-\S+)", "".join(output))
            key = match and match.group(1)
            assert proc.poll() is None, "".join(output)
            time.sleep(0.2)
        assert key, "".join(output)
        assert (tmp_path / "data" / "db.sqlite3").exists()

        base = f"http://127.0.0.1:{port}"
        with httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=10
        ) as client:
            while time.monotonic() < deadline:
                try:
                    # Ready once the worker has loaded the model: before, a chat is refused
                    # 503 model_unavailable.
                    if client.get("/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.2)
            session = client.post("/api/v1/sessions", json={"title": "smoke"}).json()
            job = client.post(
                f"/api/v1/sessions/{session['id']}/messages",
                json={
                    "content": "What is the capital of France?",
                    "max_tokens": 12,
                    "temperature": 0,
                },
            ).json()
            while time.monotonic() < deadline:
                job = client.get(f"/api/v1/jobs/{job['id']}").json()
                if job["status"] in ("succeeded", "failed", "cancelled"):
                    break
                time.sleep(0.2)
        assert job["status"] == "succeeded", (job, "".join(output)[-4000:])
        assert "Paris" in job["message"]["content"], job

        # The README's operating commands work beside it, with nothing exported.
        bootstrap = subprocess.run(
            [sys.executable, "manage.py", "bootstrap_demo", "--json"],
            cwd=ROOT,
            env={**env, "AUTOGLM_REDIS_PORT": "", "PORT": ""},
            capture_output=True,
            text=True,
        )
        assert bootstrap.returncode == 0, bootstrap.stderr
        second_key = json.loads(bootstrap.stdout)["api_key"]
        models = httpx.get(
            f"{base}/v1/models", headers={"Authorization": f"Bearer {second_key}"}, timeout=10
        )
        assert [m["id"] for m in models.json()["data"]] == ["smollm2-135m"], models.text
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
    # Ctrl-C stopped everything it started.
    assert not port_open(port) and not port_open(redis_port)
