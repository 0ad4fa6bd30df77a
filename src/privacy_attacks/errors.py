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


def require_fraction(value: Any, key: str) -> None:
    """Raise :class:`ConfigError` unless ``value`` is a number in [0, 1) (a probability or a relative range)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < 1
    if not ok:
        raise ConfigError(f"{key}={value!r} is not allowed: it must be in [0, 1).")


def is_integer(value: Any) -> bool:
    """Whether ``value`` is an ``int`` (``True``/``False`` are not integers here)."""
    return isinstance(value, int) and not isinstance(value, bool)


def require_int(value: Any, key: str, *, minimum: int | None = 1, null_means: str | None = None) -> None:
    """Raise :class:`ConfigError` unless ``value`` is an integer >= ``minimum`` (None: any integer).

    The message reads ``it must be an integer > 0`` for ``minimum=1``, ``... >= m`` for another
    ``minimum`` and ``... an integer`` without one. ``null_means`` allows ``None`` too, and says
    what it means (``... or null (no limit)``).
    """
    if value is None and null_means is not None:
        return
    if is_integer(value) and (minimum is None or value >= minimum):
        return
    if minimum is None:
        rule = "an integer"
    else:
        rule = "an integer > 0" if minimum == 1 else f"an integer >= {minimum}"
    if null_means is not None:
        rule += f" or null ({null_means})"
    raise ConfigError(f"{key}={value!r} is not allowed: it must be {rule}.")


def require_bool(value: Any, key: str) -> None:
    """Raise :class:`ConfigError` unless ``value`` is ``True`` or ``False``."""
    if not isinstance(value, bool):
        raise ConfigError(f"{key}={value!r} is not allowed: it must be true or false.")


def require_choice(value: Any, choices: Iterable[Any], key: str) -> None:
    """Raise :class:`ConfigError` unless ``value`` is one of ``choices`` (listed in the message)."""
    choices = list(choices)
    if value not in choices:
        listed = ", ".join(str(c) for c in choices)
        raise ConfigError(f"{key}={value!r} is not one of the choices: {listed}.")
