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
import numpy as np  # noqa: E402
from torch import Tensor  # noqa: E402

from privacy_attacks.statistics import mean_ci95  # noqa: E402


def mosaic(rows: Sequence[Tensor], gap: int = 2) -> np.ndarray:
    """The images of every row (each (K, C, H, W) in [0, 1]: grey for one channel, colour for three) tiled into one
    (rows x (H + gap), K x (W + gap), 3) array on white, row r and column c at ``(r * (H + gap), c * (W + gap))``."""
    height = max(images.shape[2] for images in rows) + gap
    width = max(images.shape[3] for images in rows) + gap
    columns = max(len(images) for images in rows)
    canvas = np.ones((len(rows) * height, columns * width, 3), dtype=np.float32)
    for r, images in enumerate(rows):
        images = images.detach().float().cpu().clamp(0, 1)
        if images.shape[1] != 3:  # one channel (or the first of others), in grey
            images = images[:, :1].expand(-1, 3, -1, -1)
        for c, image in enumerate(images.permute(0, 2, 3, 1).numpy()):
            canvas[r * height : r * height + image.shape[0], c * width : c * width + image.shape[1]] = image
    return canvas


def _image_grid(
    path: Path,
    rows: Sequence[tuple[str, Tensor]],
    figsize: tuple[float, float],
    top_titles: Sequence[str] | None = None,
    bottom_titles: Sequence[str] | None = None,
    title: str = "",
    title_size: int = 9,
    titled_rows: Sequence[tuple[int, Sequence[str]]] = (),
) -> Path:
    """Save one row of images per (label, images (K, C, H, W) in [0, 1]: grey for one channel, colour for three),
    titles above the first row (and above each row of ``titled_rows``: (row, titles)) and/or below the last;
    returns ``path``.

    The images are tiled into one picture drawn in one axes (:func:`mosaic`), the labels and titles written around
    it: one axes per image cost a job seconds of plotting."""
    gap = 2
    canvas = mosaic([images for _, images in rows], gap)
    height, width = canvas.shape[0] // len(rows), canvas.shape[1] // max(len(images) for _, images in rows)
    fig = plt.figure(figsize=figsize)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(canvas, interpolation="nearest")
    ax.set_axis_off()
    for r, (label, _) in enumerate(rows):
        ax.text(-gap, r * height + (height - gap) / 2, label, ha="right", va="center", fontsize=7)
    titled_rows = [*([(0, top_titles)] if top_titles else []), *titled_rows]
    for row, titles in titled_rows:
        for c, text in enumerate(titles):
            ax.text(c * width + (width - gap) / 2, row * height - gap, text, ha="center", va="bottom", fontsize=8)
    for c, text in enumerate(bottom_titles or []):
        ax.text(c * width + (width - gap) / 2, canvas.shape[0], text, ha="center", va="top", fontsize=6)
    if title:
        top = -gap - (4 * height // 10 if any(row == 0 for row, _ in titled_rows) else 0)
        ax.text(canvas.shape[1] / 2, top, title, ha="center", va="bottom", fontsize=title_size)
    fig.savefig(path, dpi=110, bbox_inches="tight")  # the labels and titles around the picture are kept whole
    plt.close(fig)
    return path


MAX_COLUMNS = 20  # classes side by side in a figure of image rows; more wrap


def image_rows_figure(
    path: Path, rows: Sequence[tuple[str, Tensor]], column_titles: Sequence[str], title: str = ""
) -> Path:
    """Save a grid: one row per (label, images (K, C, H, W) in [0, 1]), one column per class; returns ``path``. More
    than :data:`MAX_COLUMNS` classes wrap: the rows again for each next block of classes, below a line of their
    titles."""
    columns = min(len(column_titles), MAX_COLUMNS)
    blocks = [slice(start, start + MAX_COLUMNS) for start in range(0, max(len(column_titles), 1), MAX_COLUMNS)]
    wrapped: list[tuple[str, Tensor]] = []
    titled: list[tuple[int, Sequence[str]]] = []
    for block in blocks:
        if wrapped:  # a blank band for the next block's titles
            wrapped.append(("", rows[0][1][:0]))
        titled.append((len(wrapped), column_titles[block]))
        wrapped += [(label, images[block]) for label, images in rows]
    figsize = (1.1 * columns + 1.2, 1.2 * len(wrapped) + 0.5)
    return _image_grid(path, wrapped, figsize, titled_rows=titled, title=title)


def originals_figure(
    path: Path, originals: Tensor, reconstructions: Tensor, titles: Sequence[str], title: str = ""
) -> Path:
    """Originals (K, 1, H, W) in the top row, their reconstructions (K, 1, H, W) below; returns ``path``."""
    rows = [("original", originals), ("reconstruction", reconstructions)]
    figsize = (0.9 * len(originals) + 1.2, 2.6)
    return _image_grid(path, rows, figsize, bottom_titles=titles, title=title, title_size=8)


def quality_figure(
    sweep_dir: Path,
    rows: list[dict[str, Any]],
    x: str = "batch_size",
    group: str | None = "method",
    metrics: Sequence[str] = ("recon/psnr", "recon/ssim"),
    title: str = "",
) -> Path:
    """``quality.png`` of a sweep: each metric against the swept key ``x``, one line per value of ``group``.

    ``x`` may be numeric (batch size, log scale; positive values only) or categorical (layer, or values with a 0, in
    the order first seen); when no job sets ``x`` (it is fixed, not swept), the jobs are plotted against ``group``
    instead. Jobs with the
    same ``group`` and ``x`` (other seeds) are one point, their mean, with the 95% t-interval as an error bar.
    ``{x}`` in ``title`` names the key on the x-axis. Called by the sweep-summary callback as
    ``f(sweep_dir=..., rows=...)``; returns the figure's path.
    """
    sweep_dir = Path(sweep_dir)
    if group and all(row.get(x) is None for row in rows):  # x is not swept (fixed by an experiment): plot against group
        x, group = group, None
    groups: dict[Any, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(row.get(group) if group else None, []).append(row)
    categories = list(dict.fromkeys(row.get(x) for row in rows))
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in categories)  # log axis
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
    fig.suptitle(title.replace("{x}", x) if title else sweep_dir.name, fontsize=9)  # {x}: what is on the x-axis
    fig.tight_layout()
    path = sweep_dir / "quality.png"
    fig.savefig(path, dpi=110, bbox_inches="tight")  # titles and labels wider than the axes are kept whole
    plt.close(fig)
    return path
