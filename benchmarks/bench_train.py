"""Benchmark: train.py's training (Lightning) against a minimal hand-written PyTorch loop of the same recipe.

Both set up the data and network and train the default LeNet5 recipe (same batch size, optimiser, cosine schedule,
epochs, validation each epoch) on the same on-device MNIST tensors, in one process, one after the other, and the script
prints both wall times and their ratio (target: <= 1.15 on CPU).

    MNIST_ROOT=../shared/data python benchmarks/bench_train.py --epochs 2 [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import lightning as L
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from privacy_attacks.data import MNISTDataModule, TensorBatches
from privacy_attacks.harness import build_loggers, instantiate_named
from privacy_attacks.pipelines import CONF_DIR
from privacy_attacks.training import fit_classifier


def plain_loop(cfg, device: torch.device) -> float:
    """The same recipe written by hand; returns the wall time of setup and training, as ``trainer.fit`` is timed."""
    L.seed_everything(cfg.model.seed, verbose=False)
    start = time.perf_counter()
    dm: MNISTDataModule = instantiate(cfg.data, batch_size=cfg.model.batch_size, members=cfg.model.members)
    dm.setup("fit")
    train_x, train_y = (t.to(device) for t in dm.tensors["train"])
    val_x, val_y = (t.to(device) for t in dm.tensors["val"])
    net = instantiate(cfg.model.net).to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=cfg.model.optimizer.lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.model.max_epochs)
    batches = TensorBatches(train_x, train_y, cfg.model.batch_size, shuffle=True, seed=cfg.model.seed)
    for _ in range(cfg.model.max_epochs):
        net.train()
        for x, y in batches:
            loss = F.cross_entropy(net(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        scheduler.step()
        net.eval()
        with torch.no_grad():
            correct = sum((net(x).argmax(1) == y).sum() for x, y in TensorBatches(val_x, val_y, 2000))
        val_acc = float(correct) / len(val_y)
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    print(f"plain loop: val/acc {val_acc:.4f}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
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
            ],
        )
        dm = MNISTDataModule(root=cfg.data.root, download=cfg.data.download)
        dm.prepare_data()  # decode the IDX files once, outside both timings
        plain = plain_loop(cfg, torch.device(args.device))
        _, metrics = fit_classifier(
            cfg.model,
            cfg.data,
            cfg.trainer,
            cfg.model.seed,
            logger=build_loggers(cfg),
            callbacks=instantiate_named(cfg.callbacks),
        )
    lightning = metrics["fit_time_s"]
    print(f"train.py (Lightning): val/acc {metrics['val/acc']:.4f}")
    print(f"epochs={args.epochs} device={args.device} threads={torch.get_num_threads()}")
    print(f"plain loop   {plain:8.2f} s")
    print(f"train.py     {lightning:8.2f} s")
    print(f"ratio        {lightning / plain:8.3f}  (target <= 1.15)")


if __name__ == "__main__":
    main()
