"""Privacy–utility curves of a defence sweep: ``privacy_utility.png`` and ``privacy_utility.md``.

A privacy–utility experiment sweeps ``defense`` over the grid points of ``conf/defense/grid/`` (and ``none``) crossed
with the attacks of one threat surface and the attacker's seeds. Every job reports the defended model's utility
(the target's test accuracy, the API's answers' KL from the undefended ones, the client's gradient cosine) beside
the attack's success; the figure puts one against the other, one curve per defence family through its strengths.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from privacy_attacks.callbacks.sweep_summary import format_mean_ci, markdown_table, seed_and_job_counts  # noqa: E402
from privacy_attacks.statistics import mean_ci95  # noqa: E402

NO_DEFENSE = "none"
LEVEL = re.compile(r"_(\d+|low|high|eps\d+)$")


def defense_family(name: Any) -> str:
    """``grid/topk_3`` -> ``topk``, ``grid/dpsgd_eps1`` -> ``dpsgd``, ``noise`` -> ``noise``, ``none`` -> ``none``."""
    return LEVEL.sub("", str(name).split("/")[-1])


def defense_level(name: Any) -> str:
    """The strength part of a grid point's name (``grid/topk_3`` -> ``3``, ``grid/dpsgd_eps1`` -> ``eps1``); ``""``."""
    match = LEVEL.search(str(name).split("/")[-1])
    return match.group(1) if match else ""


def _stats(rows: list[dict[str, Any]], metric: str) -> tuple[float, float]:
    values = [r[metric] for r in rows if isinstance(r.get(metric), (int, float)) and not isinstance(r[metric], bool)]
    mean, ci = mean_ci95(values)
    return mean, 0.0 if math.isnan(ci) else ci


def privacy_utility_points(
    rows: list[dict[str, Any]], utility: str, success: Sequence[str], panel: str | None = None
) -> list[dict[str, Any]]:
    """One point per (panel value, defence): ``panel``, ``defense``, ``family``, ``n_seeds`` (distinct ``seed``
    values), ``n_jobs`` (on every point, only when some point has more jobs than distinct seeds: the sweep also
    varies a key other than ``panel`` and ``defense``, or repeats a job) and ``<metric>`` / ``<metric>/ci95`` (mean
    and 95% t-interval half-width over the jobs) for ``utility`` and each ``success``."""
    groups: dict[tuple[Any, Any], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row.get(panel) if panel else None, row.get("defense", NO_DEFENSE)), []).append(row)
    counts = seed_and_job_counts(list(groups.values()))
    points = []
    for ((panel_value, defense), members), count in zip(groups.items(), counts, strict=True):
        point: dict[str, Any] = {"panel": panel_value, "defense": defense, "family": defense_family(defense)}
        point.update(count)
        for metric in (utility, *success):
            point[metric], point[f"{metric}/ci95"] = _stats(members, metric)
        points.append(point)
    return points


def privacy_utility_figure(
    sweep_dir: Path,
    rows: list[dict[str, Any]],
    utility: str = "target/test_acc",
    success: Sequence[str] = ("mia/auc",),
    panel: str | None = None,
    title: str = "",
) -> Path:
    """``privacy_utility.png``: each ``success`` metric (a column each) against ``utility``, one row of panels per
    value of ``panel`` (e.g. ``method``, ``query_budget``), one curve per defence family through its strengths
    (labelled at each point), the undefended model as a black star; error bars are 95% intervals over the seeds.
    Also writes ``privacy_utility.md``, the points as a table. Called by the sweep summary as ``f(sweep_dir, rows)``.
    """
    sweep_dir = Path(sweep_dir)
    points = privacy_utility_points(rows, utility, success, panel)
    panels = list(dict.fromkeys(p["panel"] for p in points))
    families = [f for f in dict.fromkeys(p["family"] for p in points) if f != NO_DEFENSE]
    fig, axes = plt.subplots(len(panels), len(success), figsize=(4.6 * len(success), 3.4 * len(panels)), squeeze=False)
    for i, panel_value in enumerate(panels):
        here = [p for p in points if p["panel"] == panel_value]
        for j, metric in enumerate(success):
            ax = axes[i][j]
            for family in families:
                curve = sorted((p for p in here if p["family"] == family), key=lambda p: p[utility])
                if not curve:
                    continue
                ax.errorbar(
                    [p[utility] for p in curve],
                    [p[metric] for p in curve],
                    xerr=[p[f"{utility}/ci95"] for p in curve],
                    yerr=[p[f"{metric}/ci95"] for p in curve],
                    marker="o",
                    capsize=3,
                    label=family,
                )
                for p in curve:
                    if defense_level(p["defense"]):
                        ax.annotate(defense_level(p["defense"]), (p[utility], p[metric]), fontsize=7)
            for p in here:
                if p["family"] == NO_DEFENSE:
                    ax.errorbar(
                        [p[utility]], [p[metric]], xerr=[p[f"{utility}/ci95"]], yerr=[p[f"{metric}/ci95"]],
                        marker="*", markersize=12, color="black", linestyle="none", label="no defence",
                    )  # fmt: skip
            ax.set_xlabel(utility)
            ax.set_ylabel(metric)
            ax.set_title(f"{panel}={panel_value}" if panel else metric, fontsize=9)
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = sweep_dir / "privacy_utility.png"
    fig.savefig(path, dpi=120, bbox_inches="tight")  # titles and labels wider than the axes are kept whole
    plt.close(fig)
    write_points_table(sweep_dir / "privacy_utility.md", points, utility, success, panel)
    return path


def write_points_table(
    path: Path, points: list[dict[str, Any]], utility: str, success: Sequence[str], panel: str | None
) -> None:
    """The points of :func:`privacy_utility_points` as a Markdown table (mean ± 95% interval over the jobs; an
    ``n_jobs`` column beside ``n_seeds`` when the points have it)."""
    metrics = [utility, *success]
    counts = ["n_seeds", *(["n_jobs"] if any("n_jobs" in p for p in points) else [])]
    rows = [
        {
            **({panel: p["panel"]} if panel else {}),
            "defense": p["defense"],
            **{c: p[c] for c in counts},
            **{m: format_mean_ci(p[m], p[f"{m}/ci95"]) for m in metrics},
        }
        for p in points
    ]
    path.write_text(markdown_table(rows, [*([panel] if panel else []), "defense", *counts, *metrics]) + "\n")
