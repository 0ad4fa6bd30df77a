"""Where a run writes: its output folder, ``metrics.json``, and files written atomically."""

from __future__ import annotations

import json
import math
import os
import shutil
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
    """Write ``data`` as indented, valid JSON, atomically: NaN becomes null, an infinity (DP-SGD's ε without noise)
    the string ``"inf"`` or ``"-inf"``, which :func:`read_json` (and ``float()``) read back as the number."""
    clean = {k: _json_value(v) for k, v in data.items()}
    text = json.dumps(clean, indent=2, sort_keys=True, allow_nan=False) + "\n"
    return write_atomically(path, lambda tmp: tmp.write_text(text))


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value


def read_json(path: Path) -> dict[str, Any]:
    """A file of :func:`write_json`, its ``"inf"`` and ``"-inf"`` strings as the numbers they stand for."""
    return {k: (float(v) if v in ("inf", "-inf") else v) for k, v in json.loads(Path(path).read_text()).items()}


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


def move_aside(folder: Path, entries: list[Path]) -> Path:
    """Move ``entries`` (files or folders) to ``folder/earlier/<n>/``, the first ``n`` = 1, 2, ... not taken: what an
    earlier run left where a new one writes, kept beside it. Returns that folder."""
    number = 1
    while (Path(folder) / "earlier" / str(number)).exists():
        number += 1
    aside = Path(folder) / "earlier" / str(number)
    aside.mkdir(parents=True)
    for entry in entries:
        shutil.move(str(entry), aside / Path(entry).name)
    return aside
