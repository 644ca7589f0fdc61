"""The tiny demo model's fixtures, shared with the engine's tests (engine/tests/conftest.py)."""

from engine.tests.conftest import tiny_build, tiny_loaded, tiny_model_path  # noqa: F401
