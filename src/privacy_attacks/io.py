"""Where a run writes: its output folder and ``metrics.json``."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from omegaconf import DictConfig


def output_dir(cfg: DictConfig) -> Path:
    """The run's folder (``paths.output_dir``: Hydra's job folder), created if missing."""
    path = Path(cfg.paths.output_dir)
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_json(path: Path, data: dict[str, Any]) -> Path:
    """Write ``data`` as indented JSON (NaN becomes null), atomically."""
    clean = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in data.items()}
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(clean, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
    return path
