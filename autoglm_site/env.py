"""Typed readers for environment variables.

Every setting comes from the environment; a malformed value stops start-up with a message that
names the variable, instead of surfacing later as a confusing failure.
"""

import os


class ConfigError(Exception):
    """A configuration value is missing or malformed."""


def envstr(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def envbool(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be a boolean (true/false/1/0), got {raw!r}")


def envint(name: str, default: int, *, minimum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


def envlist(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


def parse_models(raw: str) -> dict[str, str]:
    """Parse ``name=path,name2=path2`` into an ordered mapping of model name to location.

    The location is a local directory (or a hub id where a network exists); the name is what
    clients send as ``model`` and what names the model's Celery queue.
    """
    models: dict[str, str] = {}
    for item in raw.split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, location = item.partition("=")
        name, location = name.strip(), location.strip()
        if not sep or not name or not location:
            raise ConfigError(f"AUTOGLM_MODELS entries must look like name=path, got {item!r}")
        if not all(c.isalnum() or c in "-_." for c in name):
            raise ConfigError(f"model name {name!r} may hold only letters, digits, '-', '_', '.'")
        if name in models:
            raise ConfigError(f"model {name!r} is listed twice in AUTOGLM_MODELS")
        models[name] = location
    if not models:
        raise ConfigError("AUTOGLM_MODELS names no model")
    return models
