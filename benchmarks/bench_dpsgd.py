"""Benchmark: the epoch time of DP-SGD (defense=dpsgd, Opacus) against non-private training of the target LeNet5.

Both train the default recipe (batch 128, Adam, validation each epoch) through ``fit_classifier`` on the same
on-device MNIST tensors, one after the other in one process; the private one with per-example gradients, clipping,
noise and Poisson-sampled batches. Prints each fit's wall time per epoch, their ratio, the thread count and the
machine's load average (other work on the machine slows both). ``--batch-size`` sets both recipes' batch (DP-SGD's
expected Poisson batch), and ``--dp-recipe`` trains ``model=lenet5_dp`` (SGD, tanh, average pooling) both times.

    MNIST_ROOT=../shared/data python benchmarks/bench_dpsgd.py --epochs 1 [--members 10000] [--device cpu|cuda]
        [--batch-size 4096] [--dp-recipe]
"""

from __future__ import annotations

import argparse
import os
import tempfile

import torch
from hydra import compose, initialize_config_dir

from privacy_attacks.data import MNISTDataModule
from privacy_attacks.defenses import recipe_with_defense
from privacy_attacks.pipelines import CONF_DIR
from privacy_attacks.training import fit_classifier


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--members", type=int, default=None, help="train on this many images (default: all 55,000)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--batch-size", type=int, default=None, help="both recipes' batch (default: the recipe's)")
    parser.add_argument("--dp-recipe", action="store_true", help="train model=lenet5_dp (default: model=lenet5)")
    args = parser.parse_args()
    trainer = "gpu" if args.device == "cuda" else "cpu"
    members = "null" if args.members is None else args.members
    times, metrics = {}, {}
    with tempfile.TemporaryDirectory() as out, initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        for name, defense in (("non-private", "none"), ("dp-sgd", "dpsgd")):
            cfg = compose(
                "train",
                [
                    f"model={'lenet5_dp' if args.dp_recipe else 'lenet5'}",
                    f"model.max_epochs={args.epochs}",
                    f"model.members={members}",
                    *([f"model.batch_size={args.batch_size}"] if args.batch_size else []),
                    f"defense={defense}",
                    f"trainer={trainer}",
                    f"paths.output_dir={out}",
                    f"paths.cache_dir={out}",
                    "+trainer.enable_progress_bar=false",
                ],
            )
            MNISTDataModule(root=cfg.data.root, download=cfg.data.download).prepare_data()  # decode outside timings
            recipe = recipe_with_defense(cfg, "model")
            _, metrics[name] = fit_classifier(recipe, cfg.data, cfg.trainer, recipe.seed, enable_checkpointing=False)
            times[name] = metrics[name]["fit_time_s"] / args.epochs
    for name, m in metrics.items():
        privacy = f"  epsilon {m['privacy/epsilon']:.2f}" if "privacy/epsilon" in m else ""
        print(f"{name:12s} val/acc {m['val/acc']:.4f}{privacy}")
    batch = args.batch_size or "recipe's"
    print(
        f"epochs={args.epochs} members={members} batch={batch} device={args.device} "
        f"threads={torch.get_num_threads()} allocator: LD_PRELOAD={os.environ.get('LD_PRELOAD', '(none)')}"
    )
    print(f"load average (1, 5, 15 min): {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for name, seconds in times.items():
        print(f"{name:12s} {seconds:8.2f} s/epoch")
    print(f"ratio        {times['dp-sgd'] / times['non-private']:8.2f}")


if __name__ == "__main__":
    main()
