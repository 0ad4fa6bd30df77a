"""Where a run writes: its output folder, ``metrics.json``, and files written atomically."""

from __future__ import annotations

import json
import math
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig


def output_dir(cfg: DictConfig) -> Path:
    """The run's folder (``paths.output_dir``: Hydra's job folder), created if missing."""
    path = Path(cfg.paths.output_dir)
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_json(path: Path, data: dict[str, Any]) -> Path:
    """Write ``data`` as indented JSON (NaN becomes null), atomically."""
    clean = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in data.items()}
    return write_atomically(path, lambda tmp: tmp.write_text(json.dumps(clean, indent=2, sort_keys=True) + "\n"))


def atomic_torch_save(path: Path, obj: Any) -> Path:
    """``torch.save(obj, path)`` atomically: readers (other jobs of a sweep) never see a half-written file."""
    return write_atomically(path, lambda tmp: torch.save(obj, tmp))


def write_atomically(path: Path, write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path`` (unique to this process and host, for shared
    storage), then rename it to ``path``; the parent folder is created if missing. An interrupted write leaves
    ``path`` as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{socket.gethostname()}.{os.getpid()}.tmp")
    try:
        write(tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
