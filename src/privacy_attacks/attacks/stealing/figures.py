"""The sweep figure of model stealing: student accuracy and agreement against the number of queries."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# Keys of a job's metrics (everything else in a summary row except `job` is an override).
METRIC_KEYS = {"student/acc", "student/agreement", "student/kl", "target/acc", "queries/used", "queries/budget", "steps", "fit_time_s"}


def _line_label(row: dict[str, Any], varying: list[str]) -> str:
    return ", ".join(f"{k}={row.get(k)}" for k in varying) or "distillation"


def _varying_overrides(rows: list[dict[str, Any]]) -> list[str]:
    """Override keys (not metrics, not ``job``/``query_budget``) whose value differs between rows: one line each."""
    keys = [k for row in rows for k in row if k not in METRIC_KEYS and k not in ("job", "query_budget")]
    keys = list(dict.fromkeys(keys))
    return [k for k in keys if len({repr(row.get(k)) for row in rows}) > 1]


def accuracy_vs_queries(sweep_dir: Path, rows: list[dict[str, Any]], filename: str = "accuracy_vs_queries.png") -> Path:
    """Plot ``student/acc`` (left) and ``student/agreement`` (right) against ``queries/used`` on a log x-axis.

    One line per combination of the overrides that differ between jobs, other than ``query_budget`` (e.g. one per ``loss``); the
    target's own accuracy on the evaluation split is a dashed horizontal line. Written to
    ``sweep_dir/filename``; returns its path.
    """
    lines: dict[str, list[tuple[float, float, float]]] = defaultdict(list)
    varying = _varying_overrides(rows)
    for row in rows:
        if isinstance(row.get("student/acc"), (int, float)):
            lines[_line_label(row, varying)].append((row["queries/used"], row["student/acc"], row["student/agreement"]))
    target_acc = next((r["target/acc"] for r in rows if isinstance(r.get("target/acc"), (int, float))), None)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharex=True)
    for label, points in lines.items():
        points.sort()
        queries = [p[0] for p in points]
        axes[0].plot(queries, [p[1] for p in points], marker="o", label=label)
        axes[1].plot(queries, [p[2] for p in points], marker="o", label=label)
    if target_acc is not None:
        axes[0].axhline(target_acc, color="black", linestyle="--", linewidth=1, label=f"target ({target_acc:.4f})")
    for ax, title in zip(axes, ("student test accuracy", "agreement with the target")):
        ax.set_xscale("log")
        ax.set_xlabel("queries to the black-box API")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("accuracy on MNIST test 0-4,999")
    axes[0].legend(loc="lower right")
    fig.suptitle("Model stealing by distillation: LeNet5 student of a LeNet5 target")
    fig.tight_layout()
    path = Path(sweep_dir) / filename
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
