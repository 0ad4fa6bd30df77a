"""DP-SGD LeNet5: tune the batch size, epochs, step size and schedule on the validation split alone.

    python benchmarks/dp_tuning.py --out dp_tuning --trainer gpu --parallel 16

Tuning: for each ε, one ``train.py -m`` sweep per (recipe, batch size, epochs) over the step sizes, at seed 0, all
with clipping 0.1 and the PRV accountant; the sweeps run as parallel processes (several fit on one GPU). The
larger batches come with proportionally more epochs, so every pair takes about the same number of steps while the
noise per example in a step, ``noise_multiplier / batch``, falls. Only ``val/acc`` (the tuning split) chooses, and
only validation and training metrics are stored or printed: the test set is never read here.

Writes ``tuning.md`` and ``tuning.json`` into ``--out`` after every sweep, and ``chosen.md`` at the end: for each ε
the setting best on ``val/acc`` and the command that reports it on fresh seeds (``--report-seeds``, seeds no tuning
job used), to be run apart, as an ``experiment=`` config once chosen (``conf/experiment/dp_sgd_eps*.yaml``).
``--budget`` stops launching tuning sweeps after that many seconds, and stops the unfinished ones at ``--budget`` +
``--grace``: what finished is kept.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]

DEFENSE = ["defense=dpsgd", "defense.max_grad_norm=0.1", "defense.accountant=prv"]
QUIET = ["logger=none", "callbacks=none", "threads=1", "+trainer.enable_progress_bar=false", "test=false"]
# What a tuning job keeps of its metrics.json: the validation split chooses; nothing of the test set is kept.
TUNING_METRICS = ("val/acc", "val/loss", "train/acc", "privacy/epsilon", "privacy/noise_multiplier", "fit_time_s")


def sweep_command(
    recipe: str, batch: int, epochs: int, lrs: str, epsilon: float, seeds: str, trainer: str
) -> list[str]:
    """The ``train.py -m`` arguments of one sweep, as a user types them (without the run-folder override)."""
    return [
        "train.py",
        "-m",
        f"model={recipe}",
        f"model.batch_size={batch}",
        f"model.max_epochs={epochs}",
        f"model.optimizer.lr={lrs}",
        *DEFENSE,
        f"defense.epsilon={epsilon:g}",
        f"seed={seeds}",
        f"trainer={trainer}",
    ]


def chosen_command(settings: dict, epsilon: float, seeds: str, trainer: str) -> list[str]:
    """``sweep_command`` for a tuning job's settings (its overrides) at other seeds."""
    batch, epochs = int(settings["model.batch_size"]), int(settings["model.max_epochs"])
    return sweep_command(settings["model"], batch, epochs, settings["model.optimizer.lr"], epsilon, seeds, trainer)


def run_sweep(command: list[str], folder: Path, deadline: float, env: dict) -> list[dict]:
    """Run one sweep into ``folder`` (stopped at ``deadline``); return a row per finished job."""
    args = [sys.executable, *command, *QUIET, f"hydra.sweep.dir={folder}"]
    log = folder.with_suffix(".log")
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as handle:
        try:
            subprocess.run(
                args, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT, timeout=max(deadline - time.time(), 1)
            )
        except subprocess.TimeoutExpired:
            handle.write("\nstopped at the budget\n")
    rows = []
    for metrics_file in sorted(folder.glob("*/metrics.json")):
        overrides = yaml.safe_load((metrics_file.parent / ".hydra" / "overrides.yaml").read_text())
        settings = dict(item.split("=", 1) for item in overrides)
        metrics = json.loads(metrics_file.read_text())
        rows.append(
            {
                "settings": settings,
                **{k: metrics.get(k) for k in TUNING_METRICS},
            }
        )
    return rows


def write_tuning(out: Path, rows: list[dict]) -> None:
    """``tuning.md`` (best val/acc first within each ε) and ``tuning.json``."""
    lines = [
        "| ε | recipe | batch | epochs | lr | val/acc | train/acc | ε spent | noise multiplier | fit s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in sorted(rows, key=lambda r: (float(r["settings"]["defense.epsilon"]), -(r["val/acc"] or 0))):
        s = row["settings"]
        setting = [
            s[k] for k in ("defense.epsilon", "model", "model.batch_size", "model.max_epochs", "model.optimizer.lr")
        ]
        measured = [f"{row['val/acc']:.4f}", f"{row['train/acc']:.4f}", f"{row['privacy/epsilon']:.3f}"]
        measured += [f"{row['privacy/noise_multiplier']:.3f}", f"{row['fit_time_s']:.0f}"]
        lines.append("| " + " | ".join([*setting, *measured]) + " |")
    (out / "tuning.md").write_text("\n".join(lines) + "\n")
    (out / "tuning.json").write_text(json.dumps(rows, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("dp_tuning"))
    parser.add_argument("--trainer", default="gpu")
    parser.add_argument("--parallel", type=int, default=2, help="sweeps run at once")
    parser.add_argument("--epsilons", default="3,8")
    parser.add_argument("--recipes", default="lenet5_dp,lenet5_dp_cosine")
    parser.add_argument("--pairs", default="1024:15,2048:30,4096:60,8192:120", help="batch:epochs pairs")
    parser.add_argument("--lrs", default="2,4,8")
    parser.add_argument(
        "--sweeps",
        default=None,
        help="instead of the grid: sweeps as eps:recipe:batch:epochs:lrs separated by spaces (lrs split by commas)",
    )
    parser.add_argument(
        "--previous", type=Path, nargs="*", default=[], help="tuning.json of earlier runs: chosen from too"
    )
    parser.add_argument(
        "--report-seeds", default="3,4,5", help="seeds of the reporting command: none a tuning job used"
    )
    parser.add_argument("--budget", type=float, default=1e9, help="seconds after which no tuning sweep starts")
    parser.add_argument("--grace", type=float, default=120, help="seconds after the budget before sweeps are stopped")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    env.setdefault("PRIVACY_ATTACKS_CACHE", tempfile.mkdtemp(prefix="dp-tuning-cache-"))
    start = time.time()
    epsilons = [float(e) for e in args.epsilons.split(",")]
    pairs = [tuple(int(v) for v in pair.split(":")) for pair in args.pairs.split(",")]
    sweeps = [
        (eps, recipe, batch, epochs, args.lrs)
        for batch, epochs in reversed(pairs)  # the largest batches first: the longest sweeps start first
        for eps in epsilons
        for recipe in args.recipes.split(",")
    ]
    if args.sweeps:
        sweeps = [(float(e), r, int(b), int(n), lrs) for e, r, b, n, lrs in (s.split(":") for s in args.sweeps.split())]
        epsilons = sorted({sweep[0] for sweep in sweeps})
    previous = [row for path in args.previous for row in json.loads(path.read_text())]
    rows: list[dict] = []

    def tune(sweep: tuple) -> None:
        eps, recipe, batch, epochs, lrs = sweep
        if time.time() - start > args.budget:
            print(f"skipped (budget): ε {eps:g} {recipe} batch {batch} epochs {epochs}", flush=True)
            return
        folder = args.out / "runs" / f"tune_eps{eps:g}_{recipe}_b{batch}_e{epochs}"
        command = sweep_command(recipe, batch, epochs, lrs, eps, "0", args.trainer)
        found = run_sweep(command, folder, start + args.budget + args.grace, env)
        rows.extend(found)
        write_tuning(args.out, rows)
        best = max((r["val/acc"] for r in found), default=float("nan"))
        done = f"[{time.time() - start:.0f} s] ε {eps:g} {recipe} batch {batch} epochs {epochs}"
        print(f"{done}: {len(found)} jobs, best val/acc {best:.4f}", flush=True)

    with ThreadPoolExecutor(args.parallel) as pool:
        list(pool.map(tune, sweeps))

    chosen = {}
    for eps in epsilons:
        candidates = [r for r in previous + rows if float(r["settings"]["defense.epsilon"]) == eps]
        best = max(candidates, key=lambda r: r["val/acc"], default=None)
        if best is not None and any(best is r for r in previous):
            print(f"ε {eps:g}: the best on val/acc is still an earlier run's ({best['settings']}): reported there")
        elif best is not None:
            chosen[eps] = best["settings"]
    tuning_seeds = {str(r["settings"].get("seed", "0")) for r in previous + rows}
    if tuning_seeds & set(args.report_seeds.split(",")):
        print(f"warning: --report-seeds {args.report_seeds} include tuning seeds {sorted(tuning_seeds)}", flush=True)
    lines = ["| ε | chosen on val/acc | val/acc | report on fresh seeds with |", "|---|---|---|---|"]
    for eps, s in sorted(chosen.items()):
        best = max((r for r in rows if r["settings"] is s), key=lambda r: r["val/acc"])
        command = " ".join(["python", *chosen_command(s, eps, args.report_seeds, args.trainer)])
        recipe = (
            f"{s['model']}, batch {s['model.batch_size']}, {s['model.max_epochs']} epochs, lr {s['model.optimizer.lr']}"
        )
        lines.append(f"| {eps:g} | {recipe} | {best['val/acc']:.4f} | `{command}` |")
    text = "\n".join(lines) + "\n"
    (args.out / "chosen.md").write_text(text)
    print(text, f"\ntotal {time.time() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
