"""Glue for the thin ``train.py`` / ``attack.py`` scripts: user errors print one clear line, no traceback."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from privacy_attacks.errors import UserError

log = logging.getLogger("privacy_attacks")


def run_reporting_errors(run: Callable[[DictConfig], Any], cfg: DictConfig) -> Any:
    """Call ``run(cfg)``; a :class:`UserError` or a config error exits with status 2 and its message."""
    try:
        return run(cfg)
    except (UserError, OmegaConfBaseException) as error:
        message = one_line(error)
        log.error("%s", message)
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2) from None


def one_line(error: Exception) -> str:
    """A user error's message; an OmegaConf error's first line with the key it is about (its other lines dropped),
    and what to do for a value a config leaves to the user (``???``)."""
    if not isinstance(error, OmegaConfBaseException):
        return str(error)
    first = (str(error).splitlines() or [type(error).__name__])[0].rstrip()
    missing = "Missing mandatory value: "
    if missing in first:  # the value itself, or an interpolation to it
        key = first.partition(missing)[2]
        return f"{missing}{key}: set {key}=<value> on the command line or in the config file that leaves it ???."
    key = getattr(error, "full_key", None)  # the key the error is about, when its first line does not name it
    return f"{first} (at {key})" if key and key not in first else first
