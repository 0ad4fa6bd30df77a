"""The lab's report: ``report.md`` and a self-contained ``report.html`` (figures embedded) from the stage folders.

A stage folder is a ``train.py`` run (``metrics.json``) or an ``attack.py`` sweep (``summary.csv``, and
``summary_seeds.csv`` when settings ran with several seeds; figures ``*.png``), as the sweep summary writes them.
Each stage names the data and model it ran on (from Hydra's record in its folder); a stage with ``pictures`` shows
that picture of every job of its sweep (``reconstructions.png``: the originals above their reconstructions).
"""

from __future__ import annotations

import base64
import csv
import html
import math
import os
import platform
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from privacy_attacks.callbacks.progress import format_duration
from privacy_attacks.callbacks.sweep_summary import collect_sweep, markdown_table
from privacy_attacks.harness import run_device
from privacy_attacks.io import read_json

PACKAGES = ("torch", "lightning", "hydra-core", "omegaconf", "torchmetrics", "opacus")
# A training run's metrics shown in its table (the rest stay in its metrics.json).
TRAIN_METRICS = ("train/acc", "val/acc", "test/acc", "test/loss", "fit_time_s")
# Table cells longer than this are shortened (with an ellipsis; the HTML page keeps the whole text as a tooltip).
CELL_CHARS = 32


@dataclass
class Stage:
    """One stage of the lab: its name, what it shows, the command that ran it, its folder and the picture each job
    of its sweep writes that the report shows (None: none)."""

    name: str
    title: str
    command: str
    folder: Path
    pictures: str | None = None


def _number(value: str) -> str:
    """A table cell: a number with 4 significant digits (a whole one as it is), "" for NaN (nothing to show),
    ``inf`` for an infinity (DP-SGD's ε without noise), any other text as it is."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "" if value is None else value
    if math.isnan(number):
        return ""
    if math.isinf(number):
        return "inf" if number > 0 else "-inf"
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

    A sweep with several seeds per setting shows ``summary_seeds.csv`` as ``mean ± ci95`` (and the interval over
    the victim's draws, when the sweep varied them); otherwise ``summary.csv``, without its ``job`` column and the
    text columns that never vary (a fixed override). A sweep's table keeps the columns of its attack's own
    ``summary.columns`` and the overrides that vary (all columns stay in the file), so that it fits the page.
    """
    seeds_file, summary_file, metrics_file = (folder / n for n in ("summary_seeds.csv", "summary.csv", "metrics.json"))
    shown = summary_columns(folder)
    if seeds_file.exists():
        rows = _read_csv(seeds_file)
        keys = [k for k in rows[0] if not k.endswith(("/mean", "/ci95", "/ci95_scenario"))]
        metrics = [k[: -len("/mean")] for k in rows[0] if k.endswith("/mean")]
        metrics = [m for m in metrics if shown is None or m in shown]
        body = [[_number(r[k]) for k in keys] + [_mean_ci(r, m) for m in metrics] for r in rows]
        return keys + metrics, body, seeds_file.name
    if summary_file.exists():
        rows = _read_csv(summary_file)
        settings = set(collect_sweep(folder)[1]) if shown is not None else set()
        varies = {k for k in rows[0] if len({r[k] for r in rows}) > 1}
        columns = [
            k
            for k in rows[0]
            if k != "job"
            and (k in varies or _numeric(rows[0][k]))
            and (shown is None or k in shown or (k in settings and k in varies))
        ]
        return columns, [[_number(r[k]) for k in columns] for r in rows], summary_file.name
    if metrics_file.exists():
        metrics = read_json(metrics_file)
        shown = [k for k in TRAIN_METRICS if k in metrics] + [k for k in metrics if k.startswith("privacy/")]
        return shown, [[_number(str(metrics[k])) for k in shown]], metrics_file.name
    return [], [], ""


def _mean_ci(row: dict[str, str], metric: str) -> str:
    """``mean ± ci95`` of a seed summary's row, the mean alone without an interval (one seed), and
    `` (± ci95_scenario over draws)`` when there is one."""
    mean, ci = _number(row[metric + "/mean"]), _number(row[metric + "/ci95"])
    cell = f"{mean} ± {ci}" if mean and ci else mean
    scenario = _number(row.get(metric + "/ci95_scenario"))
    return f"{cell} (± {scenario} over draws)" if scenario and cell else cell


def summary_columns(folder: Path) -> list[str] | None:
    """The columns a sweep's attack chose for its summary table (``summary.columns`` as Hydra recorded it);
    None for a run, or a sweep that chose none."""
    if not (folder / "multirun.yaml").exists():
        return None
    columns = OmegaConf.select(
        OmegaConf.load(folder / "multirun.yaml"), "summary.columns", default=None, throw_on_resolution_failure=False
    )
    return [str(c) for c in columns] if columns else None


def _hydra_record(folder: Path) -> Any:
    """What Hydra recorded of a stage: a sweep's ``multirun.yaml`` or a run's ``.hydra/hydra.yaml`` and
    ``.hydra/config.yaml`` merged; None before the stage ran."""
    if (folder / "multirun.yaml").exists():
        return OmegaConf.load(folder / "multirun.yaml")
    run = folder / ".hydra"
    if (run / "hydra.yaml").exists():
        config = OmegaConf.load(run / "config.yaml") if (run / "config.yaml").exists() else {}
        return OmegaConf.merge(config, OmegaConf.load(run / "hydra.yaml"))
    return None


def stage_setting(folder: Path) -> list[tuple[str, str]]:
    """(name, value) of the data and the model a stage ran on, as Hydra recorded its options (``data``, and
    ``model`` of ``train.py`` or ``model@target`` of ``attack.py``; gradient inversion's shared model instead of
    the target when it attacks one); [] before the stage ran."""
    record = _hydra_record(folder)
    if record is None:
        return []
    choices = OmegaConf.select(record, "hydra.runtime.choices", default=None) or {}
    setting = []
    if choices.get("data") is not None:
        setting.append(("data", str(choices["data"])))
    model = choices.get("model@target", choices.get("model"))
    shared = OmegaConf.select(record, "shared_model", default=None, throw_on_resolution_failure=False)
    if isinstance(shared, str) and shared != "target":
        setting.append(("model", f"{shared} (the clients' shared model)"))
    elif model is not None:
        setting.append(("model", str(model)))
    return setting


def _job_number(folder: Path) -> tuple[int, str]:
    return (int(folder.name), "") if folder.name.isdigit() else (-1, folder.name)


def job_pictures(folder: Path, picture: str) -> list[tuple[str, Path]]:
    """(caption, path) of ``picture`` in every job folder of a sweep, in job order; the caption is the job's
    overrides that differ between the jobs (its folder name when none do)."""
    jobs = sorted((path.parent for path in folder.glob(f"*/{picture}")), key=_job_number)
    overrides = {}
    for job in jobs:
        path = job / ".hydra" / "overrides.yaml"
        overrides[job] = [str(o) for o in OmegaConf.load(path)] if path.exists() else []
    common = set.intersection(*(set(o) for o in overrides.values())) if len(jobs) > 1 else set()
    captions = [" ".join(o for o in overrides[job] if o not in common) for job in jobs]
    return [(caption or f"job {job.name}", job / picture) for caption, job in zip(captions, jobs)]


def _short(text: str) -> str:
    return text if len(text) <= CELL_CHARS else text[: CELL_CHARS - 1] + "…"


def environment(trainer: dict[str, Any]) -> list[tuple[str, str]]:
    """(name, value) lines: the device the lab ran on and the versions of what it ran with."""
    if run_device(trainer).type == "cuda":  # the lab checked the trainer before its first stage
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


def _breakable(text: str) -> str:
    """``text`` escaped for HTML, with a line-break opportunity after each ``/``, ``.``, ``_`` and ``@`` (long
    column names such as ``mia/tpr@0.1%fpr`` wrap instead of widening the table past the page)."""
    escaped = html.escape(text)
    for mark in "/._@":
        escaped = escaped.replace(mark, mark + "<wbr>")
    return escaped


def _html_cell(text: str) -> str:
    if len(text) <= CELL_CHARS:
        return f"<td>{html.escape(text)}</td>"
    return f"<td title='{html.escape(text, quote=True)}'>{html.escape(_short(text))}</td>"


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{_breakable(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(_html_cell(c) for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _embedded(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f"<img alt='{html.escape(alt, quote=True)}' src='data:image/png;base64,{data}'>"


def _status(state: dict[str, Any], name: str) -> str:
    entry = state.get(name)
    if entry is None:
        return "not run yet"
    return f"{entry['status']} in {format_duration(entry['seconds'])}"


def write_report(
    lab_dir: Path,
    stages: list[Stage],
    state: dict[str, Any],
    trainer: dict[str, Any],
    choices: Mapping[str, str] | None = None,
) -> Path:
    """Write ``report.md`` and ``report.html`` into ``lab_dir``; return the path of ``report.md``.

    ``choices``: the lab's ``data=``, ``model=`` and ``net=`` options (absent: each stage's own), named in the heading
    (``net`` only when given); each stage names the data and model it ran on below its command.
    """
    choices = choices or {}
    lab = [(group, choices.get(group, "each stage's own")) for group in ("data", "model")]
    lab += [("net", choices["net"])] if "net" in choices else []
    env = environment(trainer)
    md = ["# Lab report", "", *[f"- {name}: {value}" for name, value in [*lab, *env]], ""]
    page = [
        "<!doctype html><html><head><meta charset='utf-8'><title>Lab report</title><style>"
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto}"
        "table{border-collapse:collapse;font-size:12px;max-width:100%}"
        "td,th{border:1px solid #ccc;padding:3px 5px;text-align:right}th{overflow-wrap:anywhere}"
        "code{background:#f4f4f4;padding:2px;overflow-wrap:anywhere}img{max-width:100%}"
        ".pictures{display:flex;flex-wrap:wrap;gap:12px}figure{margin:0;max-width:100%}"
        "figcaption{font-size:12px;color:#444}</style></head><body><h1>Lab report</h1><ul>",
        *[f"<li>{html.escape(name)}: {html.escape(value)}</li>" for name, value in [*lab, *env]],
        "</ul>",
    ]
    for stage in stages:
        header, rows, source = stage_table(stage.folder)
        status = _status(state, stage.name)
        setting = ", ".join(f"{name} {value}" for name, value in stage_setting(stage.folder))
        md += [f"## {stage.title}", "", f"`{stage.command}` ({status})", ""]
        page += [f"<h2>{html.escape(stage.title)}</h2><p><code>{html.escape(stage.command)}</code> ({status})</p>"]
        if setting:
            md += [f"On {setting}.", ""]
            page += [f"<p>On {html.escape(setting)}.</p>"]
        if rows:
            md += [
                f"From `{stage.name}/{source}`:",
                "",
                markdown_table([{k: _short(v) for k, v in zip(header, row)} for row in rows], header),
                "",
            ]
            page += [f"<p>From <code>{stage.name}/{source}</code>:</p>", _html_table(header, rows)]
        for figure in sorted(stage.folder.glob("*.png")):
            md += [f"![{stage.name}: {figure.stem}]({stage.name}/{figure.name})", ""]
            page += [f"<p>{_embedded(figure, figure.stem)}</p>"]
        pictures = job_pictures(stage.folder, stage.pictures) if stage.pictures else []
        if pictures:
            md += [f"Each job's `{stage.pictures}`:", ""]
            page += [f"<p>Each job's <code>{html.escape(stage.pictures)}</code>:</p><div class='pictures'>"]
            for caption, path in pictures:
                relative = path.relative_to(stage.folder).as_posix()
                md += [f"![{stage.name}: {caption}]({stage.name}/{relative})", "", f"*{caption}*", ""]
                page += [f"<figure>{_embedded(path, caption)}<figcaption>{html.escape(caption)}</figcaption></figure>"]
            page.append("</div>")
    page.append("</body></html>")
    (lab_dir / "report.html").write_text("\n".join(page))
    report = lab_dir / "report.md"
    report.write_text("\n".join(md))
    return report
