"""A Hydra callback that summarises a multirun: ``summary.csv``, a printed table, the best job and a figure."""

from __future__ import annotations

import csv
import json
import logging
import math
from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)
Row = dict[str, Any]


def _parse(value: str) -> Any:
    try:
        return yaml.safe_load(value)
    except yaml.YAMLError:
        return value


def collect_rows(sweep_dir: Path) -> list[Row]:
    """One row per finished job of ``sweep_dir``: ``job``, its overrides (one column each) and metrics.

    A job counts as finished when its folder holds ``metrics.json``; jobs are ordered by number.
    """
    rows = []
    for metrics_file in sorted(Path(sweep_dir).glob("*/metrics.json"), key=lambda p: (len(p.parent.name), p.parent.name)):
        job_dir = metrics_file.parent
        overrides_file = job_dir / ".hydra" / "overrides.yaml"
        overrides = yaml.safe_load(overrides_file.read_text()) if overrides_file.exists() else []
        row: Row = {"job": job_dir.name}
        for item in overrides or []:
            key, _, value = item.lstrip("+~").partition("=")
            row[key] = _parse(value)
        row.update(json.loads(metrics_file.read_text()))
        rows.append(row)
    return rows


def best_row(rows: list[Row], metric: str, mode: str = "max", tiebreak: str | None = None) -> Row | None:
    """The row with the best ``metric`` (``mode`` max or min), ties broken by ``tiebreak`` (same mode)."""
    sign = 1.0 if mode == "max" else -1.0

    def score(row: Row) -> tuple[float, float]:
        def value(key: str | None) -> float:
            v = row.get(key) if key else None
            return sign * float(v) if isinstance(v, (int, float)) and not math.isnan(v) else -math.inf

        return value(metric), value(tiebreak)

    candidates = [r for r in rows if isinstance(r.get(metric), (int, float))]
    return max(candidates, key=score) if candidates else None


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def markdown_table(rows: list[Row], columns: list[str]) -> str:
    """``rows`` as a markdown table of ``columns``."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_format(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def summarise(sweep_dir: Path, summary: DictConfig | dict | None) -> list[Row]:
    """Write ``summary.csv`` and ``summary.md`` into ``sweep_dir``, print the table, name the best job,
    and call ``summary.figure`` (a partial ``f(sweep_dir, rows)``) if configured. Returns the rows."""
    summary = OmegaConf.create(summary or {})
    rows = collect_rows(sweep_dir)
    if not rows:
        log.warning("No finished job (metrics.json) under %s: no summary.", sweep_dir)
        return rows
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    with open(sweep_dir / "summary.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    shown = [c for c in columns if not c.endswith("_s")] if summary.get("columns") is None else ["job", *summary.columns]
    table = markdown_table(rows, shown)
    text = f"{table}\n"
    metric = summary.get("metric")
    best = best_row(rows, metric, summary.get("mode", "max"), summary.get("tiebreak")) if metric else None
    if best is not None:
        text += f"\nBest job by {metric}: {best['job']} ({_format(best[metric])})\n"
    (sweep_dir / "summary.md").write_text(text)
    print(f"\nSweep summary ({sweep_dir}/summary.csv):\n\n{text}", flush=True)
    if summary.get("figure"):
        path = instantiate(summary.figure)(sweep_dir=sweep_dir, rows=rows)
        print(f"Figure: {path}", flush=True)
    return rows


class SweepSummary(Callback):
    """At the end of a multirun, summarise every job of the sweep folder (see :func:`summarise`).

    The ranking metric, its mode, a tie-break metric and a figure function come from the
    job config's ``summary`` node, which each attack config fills in.
    """

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        summarise(Path(config.hydra.sweep.dir), OmegaConf.select(config, "summary"))
