"""Figures of output inversion: a job's grid (``reconstructions.png``) and a sweep's ``comparison.png``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from privacy_attacks.engine.figures import image_rows_figure
from privacy_attacks.statistics import varying_overrides


def reconstruction_figure(
    path: Path,
    images: Tensor,
    labels: Tensor,
    means: Tensor,
    confidence: Tensor,
    title: str = "",
    class_names: Sequence[str] | None = None,
    nearest: Tensor | None = None,
) -> Path:
    """``reconstructions.png``: a row of reconstructions (N, C, H, W) above the real class means and, when given,
    the nearest private training image of each (N, C, H, W), each column titled by its class (its name when
    ``class_names`` is given) and the target's confidence."""
    names = [str(class_names[int(y)]) if class_names else str(int(y)) for y in labels]
    titles = [f"{name} (p={float(p):.2f})" for name, p in zip(names, confidence)]
    rows = [("inversion", images), ("class mean", means[labels])]
    if nearest is not None:
        rows.append(("nearest private", nearest))
    return image_rows_figure(path, rows, titles, title)


def comparison_figure(sweep_dir: Path, rows: list[dict[str, Any]], metric: str = "inversion/evaluator_acc") -> Path:
    """``comparison.png`` of a sweep: one row per job (the overrides that differ between jobs, and ``metric``), one
    column per class.

    The ``summary.figure`` hook of the sweep-summary callback (``f(sweep_dir, rows) -> path``).
    """
    sweep_dir = Path(sweep_dir)
    shown, labels, names = [], None, []
    varying = [k for k in varying_overrides(rows) if not k.endswith("_s")]
    for row in rows:
        saved = torch.load(sweep_dir / str(row["job"]) / "reconstructions.pt", map_location="cpu", weights_only=True)
        labels, names = saved["labels"], saved.get("class_names") or []
        overrides = ", ".join(f"{k}={row.get(k)}" for k in varying)
        score = row.get(metric)
        label = f"job {row['job']}\n{overrides}" + (
            f"\n{metric.split('/')[-1]}={score:.2f}" if isinstance(score, float) else ""
        )
        shown.append((label, saved["images"]))
    titles = [str(names[int(y)]) if names else str(int(y)) for y in labels] if labels is not None else []
    return image_rows_figure(sweep_dir / "comparison.png", shown, titles, f"Model inversion sweep: {sweep_dir.name}")
