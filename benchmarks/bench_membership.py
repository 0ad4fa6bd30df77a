"""Wall time of each membership attack on the 1,000-member target, and of LiRA per shadow model.

    python benchmarks/bench_membership.py                       # all methods, 16 shadow models
    python benchmarks/bench_membership.py --methods loss lira --num-shadows 4

The target is provisioned (trained once, cached) before timing starts. Shadow models go into a
fresh temporary cache, so their training is part of the timed run; the target cache is not touched.
Prints one markdown table: method, attack wall time, AUC, and for LiRA the seconds per shadow model.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.utils import get_method
from omegaconf import open_dict

from privacy_attacks.targets import provision_target

ROOT = Path(__file__).resolve().parents[1]
METHODS = ["proxy", "shadow", "loss", "confidence", "entropy", "modified_entropy", "lira", "lira_offline"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    parser.add_argument("--num-shadows", type=int, default=16, help="LiRA shadow models")
    parser.add_argument("--overrides", nargs="*", default=[], help="extra Hydra overrides")
    args = parser.parse_args()
    rows = []
    with (
        tempfile.TemporaryDirectory() as work,
        initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"),
    ):
        for method in args.methods:
            cfg = compose(
                "attack",
                overrides=[
                    "attack=membership",
                    f"method={method}",
                    f"num_shadows={args.num_shadows}",
                    "logger=none",
                    f"paths.output_dir={work}/{method}",
                    "+trainer.enable_progress_bar=false",
                    *args.overrides,
                ],
            )
            get_method(cfg.attack.validate)(cfg)
            target = provision_target(cfg)  # cached; not timed
            with open_dict(cfg):
                cfg.paths.cache_dir = f"{work}/shadow_cache"  # shadow models are trained inside the timed run
            start = time.perf_counter()
            metrics = get_method(cfg.attack.entry)(cfg, target)
            seconds = time.perf_counter() - start
            shadows = metrics.get("lira/num_shadows") or metrics.get("shadow/num_models")
            rows.append(
                (method, seconds, metrics["mia/auc"], seconds / shadows if shadows else None, int(shadows or 0))
            )
            print(f"{method}: {seconds:.1f} s (AUC {metrics['mia/auc']:.4f})", flush=True)
    threads = os.environ.get("OMP_NUM_THREADS", "default")
    print(f"\nMembership attacks on the 1,000-member target (CPU threads: {threads})\n")
    print("| method | wall time (s) | shadow models | s per shadow model | mia/auc |")
    print("|---|---|---|---|---|")
    for method, seconds, auc, per_shadow, count in rows:
        per = f"{per_shadow:.1f}" if per_shadow else ""
        print(f"| {method} | {seconds:.1f} | {count or ''} | {per} | {auc:.4f} |")


if __name__ == "__main__":
    main()
