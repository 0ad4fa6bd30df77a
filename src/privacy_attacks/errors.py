"""User-facing errors: raised for bad input, printed without a traceback by the entry points."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


class UserError(Exception):
    """An error the user can fix (config value, missing data, bad checkpoint)."""


class ConfigError(UserError):
    """A config value is out of range or not one of the allowed choices."""


class DataUnavailableError(UserError):
    """A dataset is neither on disk nor downloadable."""


class CheckpointError(UserError):
    """A cached checkpoint is corrupt or does not match its config."""


def require_positive(value: Any, key: str, *, allow_zero: bool = False) -> None:
    """Raise :class:`ConfigError` unless ``value`` is a number > 0 (>= 0 with ``allow_zero``)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok:
        ok = value >= 0 if allow_zero else value > 0
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{key}={value!r} is not allowed: it must be a number {bound}.")


def require_choice(value: Any, choices: Iterable[Any], key: str) -> None:
    """Raise :class:`ConfigError` unless ``value`` is one of ``choices`` (listed in the message)."""
    choices = list(choices)
    if value not in choices:
        listed = ", ".join(str(c) for c in choices)
        raise ConfigError(f"{key}={value!r} is not one of the choices: {listed}.")
