"""The distribution itself: what it exports and what it does not drag in."""

from __future__ import annotations

import runpy
import subprocess
import sys
from pathlib import Path

import autoglm


def test_it_has_a_version():
    assert autoglm.__version__ == "0.1.0"


def test_it_imports_neither_django_nor_torch():
    code = (
        "import sys, autoglm; "
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('django', 'torch')); "
        "print(heavy)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_it_puts_every_error_under_autoglm_error():
    names = [
        "AuthenticationError",
        "PermissionDeniedError",
        "NotFoundError",
        "BadRequestError",
        "RateLimitError",
        "QuotaExceededError",
        "ServerError",
        "APIConnectionError",
        "APITimeoutError",
        "ValidationError",
        "ConflictError",
    ]
    for name in names:
        assert issubclass(getattr(autoglm, name), autoglm.AutoGLMError), name
    assert issubclass(autoglm.QuotaExceededError, autoglm.RateLimitError)
    assert issubclass(autoglm.APITimeoutError, autoglm.APIConnectionError)
    error = autoglm.RateLimitError("slow", status_code=429, code="c", param="p", request_id="r")
    assert (error.status_code, error.code, error.param, error.message, error.request_id) == (
        429,
        "c",
        "p",
        "slow",
        "r",
    )
    assert str(error) == "slow (status=429, code=c, param=p, request_id=r)"


def test_its_sync_client_is_generated_from_the_async_one():
    unasync = runpy.run_path(str(Path(__file__).resolve().parents[1] / "scripts" / "unasync.py"))
    generated = unasync["generate"]()
    assert sorted(path.name for path in unasync["TARGETS"].glob("*.py")) == sorted(
        path.name for path in generated
    )
    for path, text in generated.items():
        assert path.read_text(encoding="utf-8") == text, (
            f"{path} is out of date: run sdk/python/scripts/unasync.py"
        )
