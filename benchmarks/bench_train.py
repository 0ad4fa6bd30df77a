"""Benchmark: train.py's training (Lightning) against a minimal hand-written PyTorch loop of the same recipe.

Both set up the data and network and train the recipe (same batch size, optimiser and scheduler of the recipe's
config, epochs, validation each epoch) on the same on-device tensors, in one process, one after the other, and the
script prints both wall times, the training throughput (images/s) of each and their ratio (target: <= 1.15 on CPU).
The recipe and data are train.py's (default: LeNet5 on MNIST); any train.py override picks others, e.g. the ResNet on
CIFAR-shaped synthetic images:

    MNIST_ROOT=../shared/data python benchmarks/bench_train.py --epochs 2 [--device cpu|cuda]
    python benchmarks/bench_train.py --epochs 1 --device cuda model=resnet data=synthetic \
        data.image_shape=[3,32,32] data.source.train_size=55000 data.val_size=5000

``--out DIR`` also writes ``metrics.json`` (both times, throughputs, ratio) there.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from privacy_attacks.data import TensorBatches
from privacy_attacks.data.identity import data_shape
from privacy_attacks.harness import build_loggers, instantiate_named
from privacy_attacks.pipelines import CONF_DIR
from privacy_attacks.training import build_classifier, build_datamodule, fit_classifier


def plain_loop(cfg, device: torch.device) -> tuple[float, int]:
    """The same recipe written by hand; returns the wall time of setup and training, as ``trainer.fit`` is timed,
    and the number of training images."""
    L.seed_everything(cfg.model.seed, verbose=False)
    start = time.perf_counter()
    dm = build_datamodule(cfg.data, cfg.model, seed=cfg.model.seed)
    dm.setup("fit")
    train_x, train_y = (t.to(device) for t in dm.tensors["train"])
    val_x, val_y = (t.to(device) for t in dm.tensors["val"])
    net = build_classifier(cfg.model, data_shape(cfg.data)[1]).net.to(device)  # the recipe's network, as train.py's
    optimizer = instantiate(cfg.model.optimizer)(params=net.parameters())
    scheduler = instantiate(cfg.model.scheduler)(optimizer=optimizer) if cfg.model.get("scheduler") else None
    batches = TensorBatches(train_x, train_y, cfg.model.batch_size, shuffle=True, seed=cfg.model.seed)
    for _ in range(cfg.model.max_epochs):
        net.train()
        for x, y in batches:
            loss = F.cross_entropy(net(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if scheduler is not None:
            scheduler.step()
        net.eval()
        with torch.no_grad():
            correct = sum((net(x).argmax(1) == y).sum() for x, y in TensorBatches(val_x, val_y, 2000))
        val_acc = float(correct) / len(val_y)
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    print(f"plain loop: val/acc {val_acc:.4f}")
    return elapsed, len(train_y)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--out", type=Path, default=None, help="folder for metrics.json")
    parser.add_argument("overrides", nargs="*", help="train.py overrides: model=resnet data=synthetic ...")
    args = parser.parse_args()
    trainer = "gpu" if args.device == "cuda" else "cpu"
    with tempfile.TemporaryDirectory() as out, initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "train",
            [
                f"model.max_epochs={args.epochs}",
                f"trainer={trainer}",
                f"paths.output_dir={out}",
                "paths.cache_dir=" + out,
                "+trainer.enable_progress_bar=false",
                *args.overrides,
            ],
        )
        build_datamodule(cfg.data, cfg.model).prepare_data()  # decode the files once, outside both timings
        plain, images = plain_loop(cfg, torch.device(args.device))
        _, metrics = fit_classifier(
            cfg.model,
            cfg.data,
            cfg.trainer,
            cfg.model.seed,
            logger=build_loggers(cfg),
            callbacks=instantiate_named(cfg.callbacks),
        )
    lightning = metrics["fit_time_s"]
    seen = images * args.epochs
    print(f"train.py (Lightning): val/acc {metrics['val/acc']:.4f}")
    print(f"epochs={args.epochs} device={args.device} threads={torch.get_num_threads()} {' '.join(args.overrides)}")
    print(f"plain loop   {plain:8.2f} s  {seen / plain:9.0f} images/s")
    print(f"train.py     {lightning:8.2f} s  {seen / lightning:9.0f} images/s")
    print(f"ratio        {lightning / plain:8.3f}  (target <= 1.15; throughput ratio {plain / lightning:.3f})")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        result = {
            "plain_s": plain,
            "train_py_s": lightning,
            "plain_images_per_s": seen / plain,
            "train_py_images_per_s": seen / lightning,
            "throughput_ratio": plain / lightning,
            "val/acc": metrics["val/acc"],
        }
        (args.out / "metrics.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
