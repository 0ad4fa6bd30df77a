"""ROC figures: one job's ``roc.png`` and the sweep's comparison, linear and log-log side by side.

Carlini et al. 2022 plot ROC curves on log-log axes: the low-FPR corner, where an attack is
confident, is invisible on linear axes.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch import Tensor  # noqa: E402

from privacy_attacks.statistics import mean_ci95, varying_overrides  # noqa: E402

Curve = tuple[str, Tensor, Tensor]  # (label, fpr, tpr)


def write_roc_csv(path: Path, fpr: Tensor, tpr: Tensor) -> Path:
    """Write an ROC curve as ``fpr,tpr`` rows."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["fpr", "tpr"])
        writer.writerows(zip(fpr.tolist(), tpr.tolist()))
    return path


def read_roc_csv(path: Path) -> tuple[Tensor, Tensor]:
    """Read ``(fpr, tpr)`` written by :func:`write_roc_csv`."""
    with open(path) as handle:
        rows = list(csv.DictReader(handle))
    return torch.tensor([float(r["fpr"]) for r in rows]), torch.tensor([float(r["tpr"]) for r in rows])


def plot_roc(curves: list[Curve], path: Path, title: str = "Membership inference ROC") -> Path:
    """Save ROC curves (linear axes left, log-log right) with the chance diagonal to ``path``."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.8))
    for ax, log in zip(axes, (False, True)):
        for label, fpr, tpr in curves:
            ax.plot(fpr.numpy(), tpr.numpy(), label=label, linewidth=1.4)
        low = 1e-4 if log else 0.0
        ax.plot([low, 1], [low, 1], "k--", linewidth=0.8, label="chance")
        if log:
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlim(1e-4, 1)
            ax.set_ylim(1e-4, 1)
        else:
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1)
        ax.set_xlabel("false positive rate (non-members called members)")
        ax.set_ylabel("true positive rate (members found)")
        ax.set_title(f"{title} ({'log-log' if log else 'linear'})")
        ax.grid(alpha=0.3, which="both" if log else "major")
    axes[1].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")  # titles and labels wider than the axes are kept whole
    plt.close(fig)
    return path


def _job_label(row: dict[str, Any], keys: list[str]) -> str:
    parts = [f"{k}={row[k]}" for k in keys if k in row]
    auc = row.get("mia/auc")
    label = ", ".join(parts) or f"job {row['job']}"
    return f"{label} (AUC {auc:.3f})" if isinstance(auc, float) else label


def sweep_roc_figure(sweep_dir: Path, rows: list[dict[str, Any]], name: str = "roc_sweep.png") -> Path:
    """One ROC curve per setting of a sweep (from the jobs' ``roc.csv``), saved as ``sweep_dir/name``.

    Jobs that differ only in ``seed`` are one setting: its curve is its first seed's, and its label gives the
    mean AUC over the seeds with the 95% t-interval."""
    keys = [k for k in varying_overrides(rows) if k != "seed"]
    settings: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if (Path(sweep_dir) / str(row["job"]) / "roc.csv").exists():
            settings.setdefault(", ".join(f"{k}={row[k]}" for k in keys if k in row) or "job", []).append(row)
    curves = []
    for setting, members in settings.items():
        first = members[0]
        fpr, tpr = read_roc_csv(Path(sweep_dir) / str(first["job"]) / "roc.csv")
        if len(members) == 1:
            label = _job_label(first, keys)
        else:
            mean, ci = mean_ci95([m["mia/auc"] for m in members if isinstance(m.get("mia/auc"), float)])
            label = f"{setting} (AUC {mean:.3f} ± {ci:.3f}, {len(members)} seeds; curve: seed {first.get('seed')})"
        curves.append((label, fpr, tpr))
    return plot_roc(curves, Path(sweep_dir) / name, title="Membership inference")
