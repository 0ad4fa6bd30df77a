"""Benchmark: one sweep run by the basic launcher and by ``hydra/launcher=joblib``; wall times and ratios.

    python benchmarks/bench_launchers.py [--jobs N] [sweep overrides ...]

The sweep (default: ``attack=inversion tv_lambda=0,1e-3,1e-2 seed=0,1``, 6 jobs) runs three times through
``attack.py -m`` as a user runs it, each into its own temporary sweep folder: with the basic launcher (one job
at a time) with ``threads`` = the cores, then with the basic launcher with the threads each joblib job gets,
then with joblib (``--jobs`` at a time, default the cores, ``threads`` = cores // jobs each). The second run
separates what parallel jobs gain from what fewer threads per job gain. The sweep's first job runs once before
the timings, so the cached target (and judges, shadow models...) it needs are not trained inside them. The cache
is ``$PRIVACY_ATTACKS_CACHE`` (or ``checkpoints/``) and the data ``$MNIST_ROOT``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SWEEP = ["attack=inversion", "tv_lambda=0,1e-3,1e-2", "seed=0,1"]
QUIET = ["logger=none", "data.download=false", "+trainer.enable_progress_bar=false"]


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def first_values(sweep: list[str]) -> list[str]:
    """``sweep`` with each key at its first value: ``tv_lambda=0,1e-3`` -> ``tv_lambda=0`` (one job)."""
    return [override.split(",")[0] for override in sweep]


def attack(args: list[str], cwd: Path) -> float:
    """Run ``python attack.py <args>`` in ``cwd``; its wall time in seconds (stops on a failed run)."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, str(ROOT / "attack.py"), *args], cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"attack.py {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=cores(), help="joblib's n_jobs (default: the cores)")
    parser.add_argument("sweep", nargs="*", default=SWEEP, help="the sweep's overrides")
    args = parser.parse_args()
    n = cores()
    with tempfile.TemporaryDirectory(prefix="bench_launchers_") as work:
        work = Path(work)
        attack([*first_values(args.sweep), *QUIET, f"hydra.run.dir={work / 'warmup'}"], work)
        threads = max(n // args.jobs, 1)
        runs = {
            f"basic launcher, 1 job at a time, torch threads {n}": ["-m", *args.sweep, f"threads={n}"],
            f"basic launcher, 1 job at a time, torch threads {threads}": ["-m", *args.sweep, f"threads={threads}"],
            f"joblib, {args.jobs} jobs at a time, torch threads {threads} each": [
                "-m",
                "hydra/launcher=joblib",
                f"hydra.launcher.n_jobs={args.jobs}",
                *args.sweep,
                f"threads={threads}",
            ],
        }
        times = {}
        for i, (name, run) in enumerate(runs.items()):
            times[name] = attack([*run, *QUIET, f"hydra.sweep.dir={work / str(i)}"], work)
        jobs = len(list((work / "0").glob("*/metrics.json")))
    print(f"{' '.join(args.sweep)}: {jobs} jobs on {n} cores")
    *basics, joblib = times
    for name in basics:
        print(f"{name}: {times[name]:.1f} s (joblib's speed-up over it: {times[name] / times[joblib]:.2f}x)")
    print(f"{joblib}: {times[joblib]:.1f} s")


if __name__ == "__main__":
    main()
