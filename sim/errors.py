"""The one error type for bad input, raised before any compute."""

from __future__ import annotations

import enum


class ConfigError(ValueError):
    """A configuration value is not allowed; the message names the key and what is."""


def require(ok: bool, key: str, value: object, allowed: str) -> None:
    """Raise ``ConfigError`` with a one-line message unless ``ok``."""
    if not ok:
        shown = value.value if isinstance(value, enum.Enum) else value
        raise ConfigError(f"{key}={shown!r} is not allowed: {allowed}")
