"""The sweep figure of model stealing: student accuracy and agreement against the number of queries."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from privacy_attacks.statistics import mean_ci95, varying_overrides  # noqa: E402

# Keys of a job's metrics (everything else in a summary row except `job` is an override).
METRIC_KEYS = {
    "student/acc",
    "student/agreement",
    "student/kl",
    "target/acc",
    "queries/used",
    "queries/budget",
    "steps",
    "fit_time_s",
}


def _line_label(row: dict[str, Any], varying: list[str]) -> str:
    return ", ".join(f"{k}={row.get(k)}" for k in varying) or "distillation"


def net_name(net: str | None) -> str | None:
    """A network's name for a title: the last part of a dotted ``_target_`` (``LeNet5``), or a plain name as it is
    (the config passes torchvision's model name, e.g. ``resnet18``)."""
    return None if not net else str(net).rsplit(".", 1)[-1]


def figure_title(target_net: str | None, student_net: str | None, varying: list[str]) -> str:
    """``Model stealing by distillation: <student> student of a <target> target``; without the names when they are
    unknown or a sweep varies a network (``net@...``, ``model@target``, ``target.*``, ``student.*`` overrides: each
    line's label names it)."""
    title = "Model stealing by distillation"
    names = net_name(student_net), net_name(target_net)
    if None in names or any("net" in key or key.startswith(("model@", "target", "student")) for key in varying):
        return title
    return f"{title}: {names[0]} student of a {names[1]} target"


def accuracy_vs_queries(
    sweep_dir: Path,
    rows: list[dict[str, Any]],
    filename: str = "accuracy_vs_queries.png",
    target_net: str | None = None,
    student_net: str | None = None,
) -> Path:
    """Plot ``student/acc`` (left) and ``student/agreement`` (right) against ``queries/used`` on a log x-axis.

    One line per combination of the overrides that differ between jobs, other than ``query_budget`` and
    ``seed`` (e.g. one per ``loss``); jobs that differ only in ``seed`` are one point, their mean, with the
    95% t-interval over the seeds as an error bar. The target's own accuracy on the evaluation set is a
    dashed horizontal line. ``target_net``, ``student_net``: the networks' names for the title (:func:`figure_title`).
    Written to ``sweep_dir/filename``; returns its path.
    """
    lines: dict[str, dict[float, list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))
    varying = varying_overrides(rows, ignore={*METRIC_KEYS, "query_budget", "seed"})
    for row in rows:
        if isinstance(row.get("student/acc"), (int, float)):
            lines[_line_label(row, varying)][row["queries/used"]].append((row["student/acc"], row["student/agreement"]))
    target_acc = next((r["target/acc"] for r in rows if isinstance(r.get("target/acc"), (int, float))), None)
    seeds = max((len(v) for points in lines.values() for v in points.values()), default=1)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharex=True)
    for label, points in lines.items():
        queries = sorted(points)
        for column, ax in enumerate(axes):
            stats = [mean_ci95([p[column] for p in points[q]]) for q in queries]
            means = [m for m, _ in stats]
            half = [0.0 if math.isnan(c) else c for _, c in stats]
            # Both metrics are fractions: a bar is drawn within [0, 1] (two seeds give t = 12.7; summary_seeds.csv
            # keeps the interval as it is).
            below = [m - max(0.0, m - c) for m, c in zip(means, half)]
            above = [min(1.0, m + c) - m for m, c in zip(means, half)]
            ax.errorbar(queries, means, yerr=[below, above], marker="o", capsize=3, label=label)
    if target_acc is not None:
        axes[0].axhline(target_acc, color="black", linestyle="--", linewidth=1, label=f"target ({target_acc:.4f})")
    for ax, title in zip(axes, ("student accuracy", "agreement with the target")):
        ax.set_xscale("log")
        ax.set_xlabel("queries to the black-box API")
        ax.set_title(title + (f" (mean of {seeds} seeds, 95% CI)" if seeds > 1 else ""))
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("accuracy on the evaluation set")
    axes[0].legend(loc="lower right")
    fig.suptitle(figure_title(target_net, student_net, varying))
    fig.tight_layout()
    path = Path(sweep_dir) / filename
    fig.savefig(path, dpi=120, bbox_inches="tight")  # titles and labels wider than the axes are kept whole
    plt.close(fig)
    return path
