"""How long each default command takes on its first run: ``python benchmarks/first_run.py``.

Each default single command (every attack; feature inversion at conv2 and fc1; gradient inversion's ``ig`` and
``ig_lbfgs`` at batch 4) runs in a fresh, empty cache that holds only a copy of the default target, so every other
model it needs (judges, member-subset targets, shadow models, inversion networks) is trained inside the timing,
as a student's first run would. Prints one row per command: the wall time (stopped at ``--limit`` seconds) and the
metric that answers its quality bar.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMANDS: list[tuple[list[str], str]] = [
    (["attack=inversion"], "inversion/report_judge_acc"),
    (["attack=distillation"], "student/agreement"),
    (["attack=membership"], "mia/auc"),
    (["attack=gradient_inversion"], "recon/psnr"),
    (["attack=gradient_inversion", "method=ig", "batch_size=4", "private_set=report"], "recon/psnr"),
    (["attack=gradient_inversion", "method=ig_lbfgs", "batch_size=4", "private_set=report"], "recon/psnr"),
    (["attack=feature_inversion", "layer=conv2"], "recon/psnr"),
    (["attack=feature_inversion", "layer=fc1"], "recon/psnr"),
]


def default_target(cache: Path) -> Path:
    """The cache file of the default target (``attack.yaml``'s ``target`` recipe on the CPU)."""
    from hydra import compose, initialize_config_dir

    from privacy_attacks.targets import checkpoint_path

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="attack")
    return checkpoint_path(cfg.target, cfg.data, cache)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--target-cache", type=Path, default=Path(os.environ.get("PRIVACY_ATTACKS_CACHE", "checkpoints"))
    )
    parser.add_argument("--limit", type=float, default=600, help="seconds before a command is stopped")
    parser.add_argument("--only", type=int, nargs="*", help="indices of the commands to run (default: all)")
    args = parser.parse_args()
    target = default_target(args.target_cache)
    if not target.exists():
        raise SystemExit(f"no default target at {target}: run `python train.py` first")
    print("| command | wall s | metric |\n|---|---|---|", flush=True)
    for index, (overrides, metric) in enumerate(COMMANDS):
        if args.only and index not in args.only:
            continue
        with tempfile.TemporaryDirectory() as folder:
            cache, run = Path(folder) / "cache", Path(folder) / "run"
            cache.mkdir()
            shutil.copy(target, cache / target.name)  # the default target, and nothing else
            env = {**os.environ, "PRIVACY_ATTACKS_CACHE": str(cache)}
            command = [sys.executable, str(ROOT / "attack.py"), *overrides, "logger=none", f"hydra.run.dir={run}"]
            start = time.perf_counter()
            try:
                subprocess.run(command, cwd=ROOT, env=env, capture_output=True, timeout=args.limit, check=False)
                seconds = f"{time.perf_counter() - start:.0f}"
            except subprocess.TimeoutExpired:
                seconds = f"> {args.limit:.0f} (stopped)"
            metrics_file = run / "metrics.json"
            value = json.loads(metrics_file.read_text()).get(metric) if metrics_file.exists() else None
            shown = f"{metric} {value:.4g}" if isinstance(value, float) else "-"
            print(f"| `python attack.py {' '.join(overrides)}` | {seconds} | {shown} |", flush=True)


if __name__ == "__main__":
    main()
