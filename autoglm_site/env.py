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


def parse_pairs(raw: str, setting: str) -> dict[str, str]:
    """Parse ``name=value,name2=value2`` into an ordered mapping; ``setting`` names it in errors."""
    pairs: dict[str, str] = {}
    for item in raw.split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, value = item.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name or not value:
            raise ConfigError(f"{setting} entries must look like name=value, got {item!r}")
        if name in pairs:
            raise ConfigError(f"{name!r} is listed twice in {setting}")
        pairs[name] = value
    return pairs


def parse_models(raw: str) -> dict[str, str]:
    """Parse ``name=path,name2=path2`` into an ordered mapping of model name to location.

    The location is a local directory (or a hub id where a network exists); the name is what
    clients send as ``model`` and what names the model's Celery queue.
    """
    models = parse_pairs(raw, "AUTOGLM_MODELS")
    for name in models:
        if not all(c.isalnum() or c in "-_." for c in name):
            raise ConfigError(f"model name {name!r} may hold only letters, digits, '-', '_', '.'")
    if not models:
        raise ConfigError("AUTOGLM_MODELS names no model")
    return models
