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
        log.error("%s", error)
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
