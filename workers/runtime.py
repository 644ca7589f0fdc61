"""The worker process's resident models. Imported only by worker code: it pulls in torch."""

import logging
import threading

from django.conf import settings

from .registry import ModelRegistry

logger = logging.getLogger(__name__)

_registry: ModelRegistry | None = None
_registry_lock = threading.Lock()


def get_registry() -> ModelRegistry:
    """The process-wide registry, made on first use (tasks run on several threads)."""
    global _registry
    if _registry is None:
        with _registry_lock:
            if _registry is None:
                _registry = ModelRegistry(dict(settings.AUTOGLM_MODELS))
    return _registry


def preload(models: list[str]) -> None:
    """Load the worker's models before it takes jobs, so the first job is not slow."""
    registry = get_registry()
    for name in models:
        registry.get(name)
