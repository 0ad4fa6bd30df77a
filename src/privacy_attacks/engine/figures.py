"""Figures of reconstructions: a grid of image rows, a job's originals above its reconstructions, and a
sweep's quality (PSNR, SSIM) versus the swept layer or batch size (the ``summary.figure`` hook)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from torch import Tensor  # noqa: E402

from privacy_attacks.statistics import mean_ci95  # noqa: E402


def image_rows_figure(
    path: Path, rows: Sequence[tuple[str, Tensor]], column_titles: Sequence[str], title: str = ""
) -> Path:
    """Save a grid: one row per (label, images (K, 1, H, W) in [0, 1]), one column per class; returns ``path``."""
    columns = len(column_titles)
    fig, axes = plt.subplots(len(rows), columns, figsize=(1.1 * columns + 1.2, 1.2 * len(rows) + 0.5), squeeze=False)
    for r, (label, images) in enumerate(rows):
        for c in range(columns):
            ax = axes[r][c]
            ax.imshow(images[c, 0].detach().cpu().numpy(), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(column_titles[c], fontsize=8)
        axes[r][0].set_ylabel(label, fontsize=7, rotation=0, ha="right", va="center")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def originals_figure(
    path: Path, originals: Tensor, reconstructions: Tensor, titles: Sequence[str], title: str = ""
) -> Path:
    """Originals (K, 1, H, W) in the top row, their reconstructions (K, 1, H, W) below; returns ``path``."""
    columns = len(originals)
    fig, axes = plt.subplots(2, columns, figsize=(0.9 * columns + 1.2, 2.6), squeeze=False)
    for row, (name, images) in enumerate((("original", originals), ("reconstruction", reconstructions))):
        for c in range(columns):
            ax = axes[row][c]
            ax.imshow(images[c, 0].detach().cpu().numpy(), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 1:
                ax.set_xlabel(titles[c], fontsize=6)
        axes[row][0].set_ylabel(name, fontsize=7)
    if title:
        fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def quality_figure(
    sweep_dir: Path,
    rows: list[dict[str, Any]],
    x: str = "batch_size",
    group: str | None = "method",
    metrics: Sequence[str] = ("recon/psnr", "recon/ssim"),
    title: str = "",
) -> Path:
    """``quality.png`` of a sweep: each metric against the swept key ``x``, one line per value of ``group``.

    ``x`` may be numeric (batch size, log scale) or categorical (layer, in the order first seen); when no job
    sets ``x`` (it is fixed, not swept), the jobs are plotted against ``group`` instead. Jobs with the
    same ``group`` and ``x`` (other seeds) are one point, their mean, with the 95% t-interval as an error bar.
    Called by the sweep-summary callback as ``f(sweep_dir=..., rows=...)``; returns the figure's path.
    """
    sweep_dir = Path(sweep_dir)
    if group and all(row.get(x) is None for row in rows):  # x is not swept (fixed by an experiment): plot against group
        x, group = group, None
    groups: dict[Any, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(row.get(group) if group else None, []).append(row)
    categories = list(dict.fromkeys(row.get(x) for row in rows))
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in categories)
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.2), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for name, members in groups.items():
            values: dict[Any, list[float]] = {}
            for r in members:
                if isinstance(r.get(metric), (int, float)):
                    values.setdefault(r.get(x), []).append(r[metric])
            keys = sorted(values, key=lambda v: v if numeric else categories.index(v))
            xs = [v if numeric else categories.index(v) for v in keys]
            stats = [mean_ci95(values[v]) for v in keys]
            errors = [0.0 if math.isnan(c) else c for _, c in stats]
            ax.errorbar(
                xs,
                [m for m, _ in stats],
                yerr=errors,
                marker="o",
                capsize=3,
                label=f"{group}={name}" if group else None,
            )
        if numeric:
            ax.set_xscale("log", base=2)
            ax.set_xticks(sorted(categories), [str(v) for v in sorted(categories)])
        else:
            ax.set_xticks(range(len(categories)), [str(v) for v in categories])
        ax.set_xlabel(x)
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        if group:
            ax.legend(fontsize=7)
    fig.suptitle(title or sweep_dir.name, fontsize=9)
    fig.tight_layout()
    path = sweep_dir / "quality.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
