"""The lab's report: ``report.md`` and a self-contained ``report.html`` (figures embedded) from the stage folders.

A stage folder is a ``train.py`` run (``metrics.json``) or an ``attack.py`` sweep (``summary.csv``, and
``summary_seeds.csv`` when settings ran with several seeds; figures ``*.png``), as the sweep summary writes them.
"""

from __future__ import annotations

import base64
import csv
import html
import json
import os
import platform
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from privacy_attacks.callbacks.progress import format_duration
from privacy_attacks.callbacks.sweep_summary import markdown_table

PACKAGES = ("torch", "lightning", "hydra-core", "omegaconf", "torchmetrics", "opacus")
# A training run's metrics shown in its table (the rest stay in its metrics.json).
TRAIN_METRICS = ("train/acc", "val/acc", "test/acc", "test/loss", "fit_time_s")


@dataclass
class Stage:
    """One stage of the lab: its name, what it shows, the command that ran it and its folder."""

    name: str
    title: str
    command: str
    folder: Path


def _number(value: str) -> str:
    try:
        number = float(value)
    except ValueError:
        return value
    return f"{number:.4g}" if number != int(number) or abs(number) >= 1e5 else str(int(number))


def _numeric(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def stage_table(folder: Path) -> tuple[list[str], list[list[str]], str]:
    """(header, rows, source file name) of a stage's results; ([], [], "") when it has none yet.

    A sweep with several seeds per setting shows ``summary_seeds.csv`` as ``mean ± ci95``; otherwise
    ``summary.csv``, without its ``job`` column and the text columns that never vary (a fixed override).
    """
    seeds_file, summary_file, metrics_file = (folder / n for n in ("summary_seeds.csv", "summary.csv", "metrics.json"))
    if seeds_file.exists():
        rows = _read_csv(seeds_file)
        keys = [k for k in rows[0] if not k.endswith(("/mean", "/ci95"))]
        metrics = [k[: -len("/mean")] for k in rows[0] if k.endswith("/mean")]
        body = [
            [_number(r[k]) for k in keys] + [f"{_number(r[m + '/mean'])} ± {_number(r[m + '/ci95'])}" for m in metrics]
            for r in rows
        ]
        return keys + metrics, body, seeds_file.name
    if summary_file.exists():
        rows = _read_csv(summary_file)
        columns = [k for k in rows[0] if k != "job" and (len({r[k] for r in rows}) > 1 or _numeric(rows[0][k]))]
        return columns, [[_number(r[k]) for k in columns] for r in rows], summary_file.name
    if metrics_file.exists():
        metrics = json.loads(metrics_file.read_text())
        shown = [k for k in TRAIN_METRICS if k in metrics] + [k for k in metrics if k.startswith("privacy/")]
        return shown, [[_number(str(metrics[k])) for k in shown]], metrics_file.name
    return [], [], ""


def environment(trainer: dict[str, Any]) -> list[tuple[str, str]]:
    """(name, value) lines: the device the lab ran on and the versions of what it ran with."""
    accelerator = str(trainer.get("accelerator", "cpu"))
    if accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available():
        device = f"GPU: {torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda})"
    else:
        cpu = platform.processor() or platform.machine()
        device = f"CPU: {cpu}, {os.cpu_count()} cores"
    lines = [("device", device), ("python", platform.python_version())]
    for package in PACKAGES:
        try:
            lines.append((package, metadata.version(package)))
        except metadata.PackageNotFoundError:
            pass
    lines.append(("command", " ".join(["python -m privacy_attacks.lab", *sys.argv[1:]])))
    return lines


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _status(state: dict[str, Any], name: str) -> str:
    entry = state.get(name)
    if entry is None:
        return "not run yet"
    return f"{entry['status']} in {format_duration(entry['seconds'])}"


def write_report(lab_dir: Path, stages: list[Stage], state: dict[str, Any], trainer: dict[str, Any]) -> Path:
    """Write ``report.md`` and ``report.html`` into ``lab_dir``; return the path of ``report.md``."""
    env = environment(trainer)
    md = ["# Lab report", "", *[f"- {name}: {value}" for name, value in env], ""]
    page = [
        "<!doctype html><html><head><meta charset='utf-8'><title>Lab report</title><style>"
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse;font-size:13px}"
        "td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}code{background:#f4f4f4;padding:2px}"
        "img{max-width:100%}</style></head><body><h1>Lab report</h1><ul>",
        *[f"<li>{html.escape(name)}: {html.escape(value)}</li>" for name, value in env],
        "</ul>",
    ]
    for stage in stages:
        header, rows, source = stage_table(stage.folder)
        status = _status(state, stage.name)
        md += [f"## {stage.title}", "", f"`{stage.command}` ({status})", ""]
        page += [f"<h2>{html.escape(stage.title)}</h2><p><code>{html.escape(stage.command)}</code> ({status})</p>"]
        if rows:
            md += [
                f"From `{stage.name}/{source}`:",
                "",
                markdown_table([dict(zip(header, row)) for row in rows], header),
                "",
            ]
            page += [f"<p>From <code>{stage.name}/{source}</code>:</p>", _html_table(header, rows)]
        for figure in sorted(stage.folder.glob("*.png")):
            md += [f"![{stage.name}: {figure.stem}]({stage.name}/{figure.name})", ""]
            data = base64.b64encode(figure.read_bytes()).decode()
            page += [f"<p><img alt='{html.escape(figure.stem)}' src='data:image/png;base64,{data}'></p>"]
    page.append("</body></html>")
    (lab_dir / "report.html").write_text("\n".join(page))
    report = lab_dir / "report.md"
    report.write_text("\n".join(md))
    return report
