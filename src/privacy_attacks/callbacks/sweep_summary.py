"""A Hydra callback that summarises a multirun: ``summary.csv``, a printed table, the best job and a figure.

When the sweep varies ``seed`` (the attacker's seed), it also writes ``summary_seeds.csv``: one row
per setting (the override values other than ``seed`` and the scenario keys) with ``n_seeds`` (its distinct seeds),
``n_jobs`` when some setting has more jobs than distinct seeds, and, for each numeric metric, ``<metric>/mean`` and
``<metric>/ci95`` (half-width of the 95% Student-t interval over the attacker's seeds).

*Scenario keys* (``summary.scenario``, e.g. ``[private_seed]`` or ``[eval_seed]``) name the draws of the victim's side
that an experiment sweeps beside the attacker's seed (which clients, which private images, which evaluation set).
Jobs that differ only in them belong to one setting, which then also gets ``n_scenarios`` and
``<metric>/ci95_scenario``: the interval over the scenarios' means (attacker × scenario: the scenario is the unit),
while ``<metric>/ci95`` pools the attacker's variation within each scenario (:func:`~privacy_attacks.statistics.
pooled_ci95`).
"""

from __future__ import annotations

import csv
import functools
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from privacy_attacks.io import move_aside, read_json, write_atomically, write_json
from privacy_attacks.statistics import hashable, mean_ci95, pooled_ci95

log = logging.getLogger(__name__)
Row = dict[str, Any]


EARLIER_FILE = ".summary_earlier.json"  # in the sweep folder: its jobs' metrics.json from before the sweep began


@functools.cache
def _override_parser() -> OverridesParser:
    return OverridesParser.create()


def _parse(value: str) -> Any:
    """An override's value as Hydra reads it (``1e-3`` a float, ``on`` a string), the text itself where it cannot."""
    try:
        return _override_parser().parse_override(f"key={value}").value()
    except Exception:  # noqa: BLE001 - a value Hydra's grammar does not take stays the text it is
        return value


# What a sweep writes at the top of its folder, beside its job folders (the summary's figure has a name of its own).
SWEEP_FILES = ("multirun.yaml", "summary.csv", "summary.md", "summary_seeds.csv", EARLIER_FILE, ".submitit")


def earlier_sweep_entries(sweep_dir: Path) -> list[Path]:
    """What an earlier sweep left in ``sweep_dir``: its job folders (a number, holding Hydra's ``.hydra/``) and
    :data:`SWEEP_FILES`, in a folder a sweep has begun in (``multirun.yaml`` there); [] otherwise. Nothing else is
    counted, so a folder that holds other things too (``hydra.sweep.dir=.``) keeps them where they are."""
    sweep_dir = Path(sweep_dir)
    if not (sweep_dir / "multirun.yaml").is_file():
        return []
    return sorted(
        entry
        for entry in sweep_dir.iterdir()
        if entry.name in SWEEP_FILES or (entry.name.isdigit() and (entry / ".hydra").is_dir())
    )


def set_aside_earlier_sweep(sweep_dir: Path) -> Path | None:
    """Move what an earlier sweep left in ``sweep_dir`` (:func:`earlier_sweep_entries`: its job folders, summaries,
    ``multirun.yaml``) to ``earlier/<n>/`` beneath it, as a sweep into the folder begins: its jobs are numbered from
    0 again and would write over the earlier ones (a sweep run again for the values an interrupted one had not
    reached), so nothing of the earlier sweep is lost or mixed with the new one. Returns where it went (None when
    nothing moved)."""
    sweep_dir = Path(sweep_dir)
    entries = earlier_sweep_entries(sweep_dir)
    if not entries:
        return None
    aside = move_aside(sweep_dir, entries)
    log.warning("%s held an earlier sweep: moved to %s, and the new sweep starts in an empty folder.", sweep_dir, aside)
    return aside


def record_earlier(sweep_dir: Path) -> dict[str, float]:
    """The ``metrics.json`` files a sweep folder holds as a sweep begins (path -> modification time), also written to
    its :data:`EARLIER_FILE` (by job folder), so that a summary made later leaves out the same ones."""
    sweep_dir = Path(sweep_dir)
    earlier = {str(p): p.stat().st_mtime for p in sweep_dir.glob("*/metrics.json")}
    write_json(sweep_dir / EARLIER_FILE, {str(Path(path).relative_to(sweep_dir)): t for path, t in earlier.items()})
    return earlier


def read_earlier(sweep_dir: Path) -> dict[str, float]:
    """What :func:`record_earlier` wrote for the folder's last sweep (none where it wrote nothing)."""
    record = Path(sweep_dir) / EARLIER_FILE
    if not record.exists():
        return {}
    return {str(Path(sweep_dir) / job): mtime for job, mtime in read_json(record).items()}


def collect_sweep(sweep_dir: Path, earlier: Mapping[str, float] | None = None) -> tuple[list[Row], list[str]]:
    """The rows of :func:`collect_rows` and the override keys among their columns.

    The override keys are the keys named in any job's ``.hydra/overrides.yaml``, in order of first
    appearance; every other column but ``job`` came from a ``metrics.json``. ``earlier`` (a ``metrics.json`` path ->
    its modification time before the sweep began) leaves out the jobs of an earlier sweep into the same folder that
    this one did not write again.
    """
    rows: list[Row] = []
    override_keys: list[str] = []
    earlier = earlier or {}
    files = sorted(Path(sweep_dir).glob("*/metrics.json"), key=lambda p: (len(p.parent.name), p.parent.name))
    fresh = [f for f in files if earlier.get(str(f)) != f.stat().st_mtime]
    if len(fresh) < len(files):
        log.warning(
            "%d job folder(s) of an earlier sweep in %s left out of this sweep's summary: %s",
            len(files) - len(fresh),
            sweep_dir,
            ", ".join(f.parent.name for f in files if f not in fresh),
        )
    for metrics_file in fresh:
        job_dir = metrics_file.parent
        overrides_file = job_dir / ".hydra" / "overrides.yaml"
        overrides = yaml.safe_load(overrides_file.read_text()) if overrides_file.exists() else []
        row: Row = {"job": job_dir.name}
        for item in overrides or []:
            key, _, value = item.lstrip("+~").partition("=")
            row[key] = _parse(value)
            if key not in override_keys:
                override_keys.append(key)
        row.update(read_json(metrics_file))
        rows.append(row)
    return rows, override_keys


def collect_rows(sweep_dir: Path) -> list[Row]:
    """One row per finished job of ``sweep_dir``: ``job``, its overrides (one column each) and metrics.

    A job counts as finished when its folder holds ``metrics.json``; jobs are ordered by number.
    """
    return collect_sweep(sweep_dir)[0]


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


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _seed_groups(rows: list[Row], setting_keys: list[str]) -> list[list[Row]]:
    """``rows`` grouped by their values of ``setting_keys``, groups in order of first appearance."""
    groups: dict[tuple[str, ...], list[Row]] = {}
    for row in rows:
        groups.setdefault(tuple(hashable(row.get(k)) for k in setting_keys), []).append(row)
    return list(groups.values())


def seed_and_job_counts(groups: list[list[Row]]) -> list[Row]:
    """``{"n_seeds": distinct seed values}`` of each group of rows; with ``"n_jobs": rows`` for every group when
    some group has more jobs than distinct seeds (a duplicated job, or a key varied outside the grouping)."""
    seeds = [len({hashable(row.get("seed")) for row in group}) for group in groups]
    jobs = [len(group) for group in groups]
    if seeds == jobs:
        return [{"n_seeds": n} for n in seeds]
    return [{"n_seeds": n, "n_jobs": j} for n, j in zip(seeds, jobs, strict=True)]


def swept_keys(rows: list[Row], override_keys: list[str]) -> list[str]:
    """The override keys whose value differs between the jobs of ``rows``: what the sweep varies."""
    return [k for k in override_keys if len({hashable(row.get(k)) for row in rows}) > 1]


def _setting_keys(override_keys: list[str], scenario: list[str] = ()) -> list[str]:
    return [k for k in override_keys if k not in ("seed", "job", *scenario)]


def metric_keys(rows: list[Row], override_keys: list[str]) -> list[str]:
    """Columns of ``rows`` that are neither ``job`` nor an override and hold a number in some row."""
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys and k != "job" and k not in override_keys]
    return [k for k in keys if any(_is_number(row.get(k)) for row in rows)]


def has_seed_repeats(rows: list[Row], override_keys: list[str], scenario: list[str] = ()) -> bool:
    """Whether some setting (the overrides other than ``seed`` and ``scenario``) was run with more than one distinct
    seed."""
    if "seed" not in override_keys:
        return False
    groups = _seed_groups(rows, _setting_keys(override_keys, scenario))
    return any(len({hashable(r.get("seed")) for r in group}) > 1 for group in groups)


def varying_scenario(rows: list[Row], override_keys: list[str], scenario: Sequence[str]) -> list[str]:
    """The ``scenario`` keys the sweep varies (a key fixed on the command line, e.g. ``private_seed=0``, is one
    draw: no interval over draws)."""
    return [k for k in scenario if k in override_keys and len({str(r.get(k)) for r in rows}) > 1]


def seed_summary(rows: list[Row], override_keys: list[str], scenario: list[str] = ()) -> list[Row]:
    """Aggregate ``rows`` over seeds (and scenarios): one row per setting, in order of first appearance.

    A setting is a combination of the values of ``override_keys`` other than ``seed``, ``job`` and the ``scenario``
    keys (a job without one of them counts as ``None`` for it). Each output row holds those values,
    ``n_seeds`` (the number of distinct ``seed`` values of the setting), ``n_jobs`` (its number of jobs; in
    every row, only when some setting has more jobs than distinct seeds) and, for each numeric metric (a
    column that is not an override and holds a number), ``<metric>/mean`` over the jobs where the metric is a
    number and ``<metric>/ci95``, the attacker's interval (pooled within scenarios); ``ci95`` is NaN when only one
    job has it, both are NaN when none has. When the sweep varies a ``scenario`` key, also ``n_scenarios`` and
    ``<metric>/ci95_scenario``, the interval over the scenarios' means (NaN for one scenario), and ``/mean`` is the
    mean of the scenarios' means (the jobs' mean where every scenario has as many jobs with the metric).
    """
    scenario = varying_scenario(rows, override_keys, scenario)
    setting_keys = _setting_keys(override_keys, scenario)
    metrics = metric_keys(rows, override_keys)
    groups = _seed_groups(rows, setting_keys)
    out: list[Row] = []
    for group, counts in zip(groups, seed_and_job_counts(groups), strict=True):
        summary: Row = {k: group[0].get(k) for k in setting_keys}
        summary.update(counts)
        by_scenario = _seed_groups(group, scenario) if scenario else [group]
        if scenario:
            summary["n_scenarios"] = len(by_scenario)
        for metric in metrics:
            values = [[r[metric] for r in part if _is_number(r.get(metric))] for part in by_scenario]
            mean, ci = mean_ci95(v for part in values for v in part)
            if scenario:  # the scenario is the unit: the mean of its means, which ci95_scenario is centred on
                mean, summary[f"{metric}/ci95_scenario"] = mean_ci95(mean_ci95(part)[0] for part in values if part)
                ci = pooled_ci95(values)
            summary[f"{metric}/mean"] = mean
            summary[f"{metric}/ci95"] = ci
        out.append(summary)
    return out


def format_mean_ci(mean: float | None, ci: float | None, digits: int = 4) -> str:
    """``"0.9114 ± 0.0031"``; the mean alone when ``ci`` is missing or NaN, ``""`` when ``mean`` is."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return ""
    if ci is None or (isinstance(ci, float) and math.isnan(ci)):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {ci:.{digits}f}"


def _mean_cis(summary: Row, metric: str) -> str:
    """``mean ± ci95``, and `` (± ci95_scenario)`` when the summary has a scenario interval."""
    text = format_mean_ci(summary[f"{metric}/mean"], summary[f"{metric}/ci95"])
    scenario = summary.get(f"{metric}/ci95_scenario")
    if scenario is None or (isinstance(scenario, float) and math.isnan(scenario)) or not text:
        return text
    return f"{text} (± {scenario:.4f})"


def seed_table(
    summaries: list[Row], override_keys: list[str], rows: list[Row], columns: list[str] | None, scenario: list[str] = ()
) -> str:
    """The markdown table of :func:`seed_summary`'s output: the overrides that differ between settings,
    ``n_seeds`` (and ``n_jobs``, ``n_scenarios`` when the summaries have them) and ``mean ± ci95`` for the metrics
    among ``columns`` (``None``: every metric not ending in ``_s``), followed by ``(± ci95_scenario)`` when the sweep
    varies its scenario. Overrides shared by every setting (``experiment=``, ``logger=``...) stay in the CSV only."""
    metrics = metric_keys(rows, override_keys)
    shown = [m for m in metrics if not m.endswith("_s")] if columns is None else [c for c in columns if c in metrics]
    settings = _setting_keys(override_keys, varying_scenario(rows, override_keys, scenario))
    varying = [k for k in settings if len({str(s.get(k)) for s in summaries}) > 1] or settings
    counts = [c for c in ("n_seeds", "n_jobs", "n_scenarios") if any(c in s for s in summaries)]
    table_rows = [
        {**{k: s[k] for k in varying}, **{c: s.get(c) for c in counts}, **{m: _mean_cis(s, m) for m in shown}}
        for s in summaries
    ]
    return markdown_table(table_rows, [*varying, *counts, *shown])


def _summarise_seeds(
    sweep_dir: Path,
    rows: list[Row],
    override_keys: list[str],
    columns: Any,
    scenario: list[str] = (),
    best_by: tuple[str, str] | None = None,
) -> str:
    """Write ``summary_seeds.csv`` when the sweep repeats a setting over seeds; its markdown section or ``""``, which
    names the setting of the best mean by ``best_by`` (metric, mode) where there are several (a single seed's best
    job flatters its setting)."""
    if not has_seed_repeats(rows, override_keys, scenario):
        return ""
    summaries = seed_summary(rows, override_keys, scenario)
    write_csv(sweep_dir / "summary_seeds.csv", summaries, list(summaries[0]))
    columns = None if columns is None else list(columns)
    table = seed_table(summaries, override_keys, rows, columns, scenario)
    varied = varying_scenario(rows, override_keys, scenario)
    how = f"over attacker seeds (± over the scenarios' means, {', '.join(varied)})" if varied else "over seeds"
    text = f"\nAcross seeds, mean ± 95% CI {how} ({sweep_dir}/summary_seeds.csv):\n\n{table}\n"
    best = best_row(summaries, f"{best_by[0]}/mean", best_by[1]) if best_by and len(summaries) > 1 else None
    if best is not None:
        keys = [k for k in _setting_keys(override_keys, varied) if len({hashable(s.get(k)) for s in summaries}) > 1]
        setting = ", ".join(f"{k}={best.get(k)}" for k in keys)
        mean = format_mean_ci(best[f"{best_by[0]}/mean"], best.get(f"{best_by[0]}/ci95"))
        text += f"\nBest setting by mean {best_by[0]}: {setting} ({mean}, {best['n_seeds']} seeds)\n"
    return text


def write_csv(path: Path, rows: list[Row], fieldnames: list[str]) -> None:
    """``rows`` as a CSV file with these columns, atomically (jobs finishing at once may each write it)."""

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=fieldnames)
            writer.writeheader()
            writer.writerows(rows)

    write_atomically(path, write)


def resolved(summary: DictConfig | dict | None) -> DictConfig | dict | None:
    """A ``summary`` node of the run's config with its interpolations into the rest of the config resolved (the
    stealing figure's network names, ``${target.net._target_}``), before it is copied away from that config; as it
    is where one cannot be resolved."""
    if not isinstance(summary, DictConfig):
        return summary
    try:
        return OmegaConf.to_container(summary, resolve=True)
    except OmegaConfBaseException:
        return summary


def summarise(
    sweep_dir: Path,
    summary: DictConfig | dict | None,
    earlier: Mapping[str, float] | None = None,
    partial: bool = False,
) -> list[Row]:
    """Write ``summary.csv`` and ``summary.md`` into ``sweep_dir``, print the table (a column for every swept key
    beside ``summary.columns``), name the best job,
    and call ``summary.figure`` (a partial ``f(sweep_dir, rows)``) if configured, and each figure of the mapping
    ``summary.figures`` (an experiment adds one beside the attack's own, e.g. a privacy–utility figure). Returns
    the rows.

    When some setting was run with several seeds, also write ``summary_seeds.csv`` (see
    :func:`seed_summary`) and print its table, which is appended to ``summary.md``. ``earlier``: the jobs of an
    earlier sweep into the same folder, left out (:func:`collect_sweep`). ``partial``: the files only, as of the jobs
    finished so far (after each job, so an interrupted sweep keeps them), no table printed, no figure."""
    summary = OmegaConf.create(resolved(summary) or {})
    rows, override_keys = collect_sweep(sweep_dir, earlier)
    if not rows:
        if not partial:
            log.warning("No finished job (metrics.json) under %s: no summary.", sweep_dir)
        return rows
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    write_csv(sweep_dir / "summary.csv", rows, columns)
    scenario = list(summary.get("scenario") or [])
    swept = swept_keys(rows, override_keys)
    if summary.get("columns") is None:  # the job, the swept keys and every metric (overrides fixed for all jobs: CSV)
        shown = [c for c in columns if not c.endswith("_s") and (c not in override_keys or c in swept)]
    else:  # the job, every swept key, the scenario's draw, then the configured columns some job has
        configured = [c for c in summary.columns if c in columns]  # a key an experiment fixes is in no job's row
        shown = list(dict.fromkeys(["job", *swept, *[k for k in scenario if k in columns], *configured]))
    table = markdown_table(rows, shown)
    text = f"{table}\n"
    metric = summary.get("metric")
    best = best_row(rows, metric, summary.get("mode", "max"), summary.get("tiebreak")) if metric else None
    if best is not None:
        text += f"\nBest job by {metric}: {best['job']} ({_format(best[metric])})\n"
    best_by = (metric, summary.get("mode", "max")) if metric else None
    seed_text = _summarise_seeds(sweep_dir, rows, override_keys, summary.get("columns"), scenario, best_by)
    if partial:
        text = f"Partial: the {len(rows)} job(s) finished so far.\n\n{text}"
    write_atomically(sweep_dir / "summary.md", lambda tmp: tmp.write_text(text + seed_text))
    if partial:
        return rows
    print(f"\nSweep summary ({sweep_dir}/summary.csv):\n\n{text}", flush=True)
    if seed_text:
        print(seed_text, flush=True)
    figures = [summary.get("figure"), *(summary.get("figures") or {}).values()]
    for figure in figures:
        if figure:
            path = instantiate(figure)(sweep_dir=sweep_dir, rows=rows)
            print(f"Figure: {path}", flush=True)
    return rows


class SweepSummary(Callback):
    """At the end of a multirun, summarise every job of the sweep folder (see :func:`summarise`).

    The ranking metric, its mode, a tie-break metric and a figure function come from the
    job config's ``summary`` node, which each attack config fills in.
    """

    def __init__(self) -> None:
        self.earlier: dict[str, float] = {}  # metrics.json files in the sweep folder before it began: path -> mtime

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        set_aside_earlier_sweep(Path(config.hydra.sweep.dir))
        self.earlier = record_earlier(Path(config.hydra.sweep.dir))

    def on_job_end(self, config: DictConfig, job_return: Any = None, **kwargs: Any) -> None:
        """After each job of a sweep, the summary files as of the jobs finished so far (an interrupted or failing
        sweep keeps them); never fails the job."""
        sweep_dir = OmegaConf.select(config, "hydra.sweep.dir", default=None)
        mode = OmegaConf.select(config, "hydra.mode", default=None)
        if sweep_dir is None or getattr(mode, "name", mode) != RunMode.MULTIRUN.name:  # a single run: no sweep
            return
        try:
            summarise(Path(sweep_dir), OmegaConf.select(config, "summary"), self.earlier, partial=True)
        except Exception as error:  # noqa: BLE001 - the summary must never fail a finished job
            log.debug("No partial summary of %s: %s", sweep_dir, error)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        summarise(Path(config.hydra.sweep.dir), OmegaConf.select(config, "summary"), self.earlier)
