"""Every entry point on the GPU, timed, from a cold cache: ``python benchmarks/gpu.py --out gpu_results``.

Each check is one ``train.py`` / ``attack.py`` / lab command with ``trainer=gpu``, or one benchmark script comparing
two ways of the same work on the card (``benchmarks/bench_*.py``, given ``--out``), run in order in a fresh target
cache (so the first one trains the target on the GPU and the rest reuse it). For each it records the exit
status, the wall time of the whole command (start-up and provisioning included) and the metrics that answer
the check, and writes ``gpu.md`` (a Markdown table headed by the GPU's name and the versions) and
``gpu.json`` into ``--out``. ``--only name ...`` runs a subset; ``--limit`` caps each command's seconds.
``benchmarks/gpu.sh`` is the one-line way to run it on a fresh GPU machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMON = ["trainer=gpu", "logger=none", "+trainer.enable_progress_bar=false"]

# name, entry point and overrides, the metrics that answer the check.
CHECKS: list[tuple[str, list[str], list[str]]] = [
    ("train", ["train.py"], ["test/acc", "fit_time_s"]),
    ("train_fast", ["train.py", "model=lenet5_fast"], ["test/acc", "fit_time_s"]),
    # A 16-job output-inversion sweep (tv_lambda x init x loss) job by job and as one batch (hydra/launcher=vectorised).
    (
        "inversion_sweep16",
        ["benchmarks/bench_vectorised.py", "trainer=gpu"],
        ["basic_wall_s", "vectorised_wall_s", "speedup_wall", "vectorised_fit_s", "max_metric_difference"],
    ),
    ("lab", ["-m", "privacy_attacks.lab"], ["stages_s"]),
    ("lab_seeds3", ["-m", "privacy_attacks.lab", "seeds=3"], ["stages_s"]),
    (
        "lira_256_reference_models",
        ["attack.py", "attack=membership", "method=lira", "num_shadows=256"],
        ["mia/auc", "mia/tpr@0.1%fpr", "time/attack_s"],
    ),
    # The ResNet's training throughput: train.py against a hand-written loop, CIFAR-shaped images (50,000 to train).
    (
        "resnet_throughput",
        [
            "benchmarks/bench_train.py",
            "--epochs",
            "2",
            "--device",
            "cuda",
            "model=resnet",
            "data=synthetic",
            "data.image_shape=[3,32,32]",
            "data.source.train_size=55000",
            "data.val_size=5000",
        ],
        ["plain_images_per_s", "train_py_images_per_s", "throughput_ratio"],
    ),
    ("resnet_fashion", ["train.py", "model=resnet", "data=fashion_mnist"], ["test/acc", "fit_time_s"]),
    (
        "lira_64_resnet",
        [
            "attack.py",
            "attack=membership",
            "method=lira",
            "num_shadows=64",
            "model@target=resnet",
            "target.members=1000",
        ],
        ["mia/auc", "mia/tpr@0.1%fpr", "time/attack_s"],
    ),
    ("dpsgd_eps1", ["train.py", "defense=dpsgd", "defense.epsilon=1"], ["test/acc", "privacy/epsilon", "fit_time_s"]),
    ("dpsgd_eps8", ["train.py", "defense=dpsgd", "defense.epsilon=8"], ["test/acc", "privacy/epsilon", "fit_time_s"]),
    (
        "lira_64_shadows",
        ["attack.py", "attack=membership", "method=lira", "num_shadows=64"],
        ["mia/auc", "mia/tpr@0.1%fpr", "time/attack_s"],
    ),
    ("membership_proxy", ["attack.py", "attack=membership"], ["mia/auc", "mia/tpr@0.1%fpr", "time/attack_s"]),
    (
        "inversion",
        ["attack.py", "attack=inversion"],
        ["inversion/evaluator_acc", "inversion/report_judge_acc", "inversion/fit_time_s"],
    ),
    ("distillation", ["attack.py", "attack=distillation"], ["student/agreement", "fit_time_s"]),
    ("gradient_idlg", ["attack.py", "attack=gradient_inversion"], ["recon/psnr", "recon/fit_time_s"]),
    (
        "gradient_ig_batch4",
        ["attack.py", "attack=gradient_inversion", "method=ig", "batch_size=4", "private_set=report"],
        ["recon/psnr", "recon/fit_time_s"],
    ),
    ("feature_conv1", ["attack.py", "attack=feature_inversion", "layer=conv1"], ["recon/psnr", "recon/fit_time_s"]),
    ("feature_conv2", ["attack.py", "attack=feature_inversion", "layer=conv2"], ["recon/psnr", "recon/fit_time_s"]),
    ("feature_fc1", ["attack.py", "attack=feature_inversion", "layer=fc1"], ["recon/psnr", "recon/fit_time_s"]),
]


def device_name() -> str:
    import torch

    if not torch.cuda.is_available():
        return "no CUDA GPU"
    return f"{torch.cuda.get_device_name(0)} (torch {torch.__version__}, CUDA {torch.version.cuda})"


def run_check(name: str, command: list[str], keys: list[str], out: Path, limit: float, env: dict) -> dict:
    run_dir = out / "runs" / name
    if command[0] == "-m":  # the lab: its own folder, its stages' settings
        args = [sys.executable, *command, "trainer=gpu", f"lab_dir={run_dir}"]
    elif command[0].startswith("benchmarks/"):  # a benchmark: its own options, metrics.json into --out
        args = [sys.executable, str(ROOT / command[0]), "--out", str(run_dir), *command[1:]]
    else:
        args = [sys.executable, str(ROOT / command[0]), *command[1:], *COMMON, f"hydra.run.dir={run_dir}"]
    start = time.perf_counter()
    try:
        done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=limit)
        status, log = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as expired:
        status, log = "timeout", f"{expired.stdout or ''}{expired.stderr or ''}"
    seconds = time.perf_counter() - start
    metrics_file = run_dir / "metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.exists() else {}
    state_file = run_dir / "state.json"
    if state_file.exists():  # the lab: its stages' time, and its report beside the table
        stages = json.loads(state_file.read_text())
        metrics["stages_s"] = sum(stage["seconds"] for stage in stages.values())
        metrics.update({f"{stage}_s": entry["seconds"] for stage, entry in stages.items()})
        keys = [*keys, *(f"{stage}_s" for stage in stages)]
        for report in ("report.md", "report.html"):
            if (run_dir / report).exists():
                shutil.copy(run_dir / report, out / f"lab_{report}")
    with open(out / "gpu.log", "a") as handle:
        handle.write(f"\n===== {name}: {' '.join(args[1:])}\n{log if status != 0 else log[-3000:]}\n")
    return {
        "name": name,
        "command": "python " + " ".join(command if command[0].startswith("benchmarks/") else [*command, "trainer=gpu"]),
        "status": status,
        "wall_s": round(seconds, 1),
        "metrics": {key: metrics[key] for key in keys if key in metrics},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("gpu_results"))
    parser.add_argument("--only", nargs="*", help="names of the checks to run (default: all)")
    parser.add_argument("--limit", type=float, default=600, help="seconds per command before it is stopped")
    parser.add_argument("--budget", type=float, default=None, help="seconds for all checks: later ones are skipped")
    parser.add_argument("--cache", type=Path, default=None, help="target cache (default: a fresh, empty one)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env["PRIVACY_ATTACKS_CACHE"] = str(args.cache or tempfile.mkdtemp(prefix="gpu-cache-"))
    results, start = [], time.perf_counter()
    for name, command, keys in CHECKS:
        if args.only and name not in args.only:
            continue
        left = args.limit if args.budget is None else min(args.limit, args.budget - (time.perf_counter() - start))
        if left < 10:
            results.append({"name": name, "command": "", "status": "skipped (budget)", "wall_s": 0, "metrics": {}})
            continue
        result = run_check(name, command, keys, args.out, left, env)
        results.append(result)
        print(f"{name}: status {result['status']}, {result['wall_s']} s, {result['metrics']}", flush=True)
        write_table(args.out, results)  # after every check: a run stopped from outside keeps what it measured
    print(write_table(args.out, results))


def write_table(out: Path, results: list[dict]) -> str:
    """Write ``gpu.md`` and ``gpu.json`` for the checks so far; return the Markdown."""
    header = f"GPU: {device_name()}; Python {platform.python_version()}"
    lines = [header, "", "| check | command | status | wall s | metrics |", "|---|---|---|---|---|"]
    for r in results:
        shown = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in r["metrics"].items())
        lines.append(f"| {r['name']} | `{r['command']}` | {r['status']} | {r['wall_s']} | {shown} |")
    (out / "gpu.md").write_text("\n".join(lines) + "\n")
    (out / "gpu.json").write_text(json.dumps({"device": header, "results": results}, indent=1))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
