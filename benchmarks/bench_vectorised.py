"""Benchmark: one reconstruction sweep run job by job (basic launcher) and as batches (``hydra/launcher=vectorised``).

    python benchmarks/bench_vectorised.py [--out DIR] [overrides ...]     # e.g. trainer=gpu, threads=1

The sweep is the output-inversion grid ``tv_lambda=0,1e-3,1e-2,1e-1 init=zeros,noise loss=logit,ce`` (16 jobs); the
overrides are added to every run. Its first job runs once before the timings (timed too: one job alone), so the
cached target and judges are not trained inside them. Both sweeps then run through ``attack.py -m`` as a user runs
them, into folders under ``--out``; the table gives the wall time of each, the sum of the jobs'
``inversion/fit_time_s`` (a vectorised job's share of its group's fit), the ratio, and the largest difference
between the two runs in any job's accuracy metrics (the same jobs must give the same numbers). Writes
``metrics.json`` and ``bench_vectorised.md`` into ``--out``. The cache is ``$PRIVACY_ATTACKS_CACHE`` (or
``checkpoints/``), the data ``$MNIST_ROOT``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from bench_launchers import attack  # runs attack.py as a user does, timed (this script's folder is on the path)

ROOT = Path(__file__).resolve().parents[1]
SWEEP = ["attack=inversion", "tv_lambda=0,1e-3,1e-2,1e-1", "init=zeros,noise", "loss=logit,ce"]
QUIET = ["logger=none", "data.download=false", "+trainer.enable_progress_bar=false"]
COMPARED = (
    "inversion/target_acc",
    "inversion/evaluator_acc",
    "inversion/report_judge_acc",
    "inversion/ssim_class_mean",
)


def job_metrics(sweep: Path) -> dict[int, dict[str, float]]:
    """Every job's ``metrics.json`` in a sweep folder, by job number."""
    return {int(p.parent.name): json.loads(p.read_text()) for p in sweep.glob("*/metrics.json")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="folder for the sweeps and the table (default: temp)")
    parser.add_argument("overrides", nargs="*", help="added to every run (trainer=gpu, threads=1, ...)")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="bench_vectorised_"))
    out.mkdir(parents=True, exist_ok=True)
    first_job = [override.split(",")[0] for override in SWEEP]
    one_job = attack([*first_job, *QUIET, *args.overrides, f"hydra.run.dir={out / 'warmup'}"], out)
    one_fit = json.loads((out / "warmup" / "metrics.json").read_text())["inversion/fit_time_s"]
    walls, runs = {}, {}
    for launcher in ("basic", "vectorised"):
        sweep = out / launcher
        command = ["-m", f"hydra/launcher={launcher}", *SWEEP, *QUIET, *args.overrides, f"hydra.sweep.dir={sweep}"]
        walls[launcher] = attack(command, out)
        runs[launcher] = job_metrics(sweep)
    jobs = sorted(runs["basic"])
    if sorted(runs["vectorised"]) != jobs:
        sys.exit(f"the sweeps ran different jobs: {jobs} against {sorted(runs['vectorised'])}")
    difference = max(abs(runs["basic"][j][k] - runs["vectorised"][j][k]) for j in jobs for k in COMPARED)
    fits = {k: sum(runs[k][j]["inversion/fit_time_s"] for j in jobs) for k in runs}
    result = {
        "jobs": len(jobs),
        "overrides": args.overrides,
        "one_job_wall_s": round(one_job, 1),
        "one_job_fit_s": round(one_fit, 2),
        "basic_wall_s": round(walls["basic"], 1),
        "vectorised_wall_s": round(walls["vectorised"], 1),
        "speedup_wall": round(walls["basic"] / walls["vectorised"], 2),
        "basic_fit_s": round(fits["basic"], 2),
        "vectorised_fit_s": round(fits["vectorised"], 2),
        "speedup_fit": round(fits["basic"] / fits["vectorised"], 2),
        "max_metric_difference": difference,
    }
    (out / "metrics.json").write_text(json.dumps(result, indent=2))
    table = "\n".join(
        [
            f"{len(jobs)}-job sweep `{' '.join(SWEEP)}` {' '.join(args.overrides)}",
            "",
            "| launcher | wall time (s) | jobs' fit time (s) |",
            "|---|---|---|",
            f"| one job alone (its first point; the target and judges cached) | {result['one_job_wall_s']} | "
            f"{result['one_job_fit_s']} |",
            f"| basic | {result['basic_wall_s']} | {result['basic_fit_s']} |",
            f"| vectorised | {result['vectorised_wall_s']} | {result['vectorised_fit_s']} |",
            "",
            f"vectorised speed-up: {result['speedup_wall']}x wall, {result['speedup_fit']}x fit; largest difference in "
            f"a job's {', '.join(COMPARED)}: {difference:.2g}",
        ]
    )
    (out / "bench_vectorised.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
