"""Benchmark: the headline inversion sweep on the engine vs a minimal hand-written PyTorch loop.

    python benchmarks/bench_inversion.py [--repeats 3] [--threads N] [--steps S]

For ``tv_lambda`` in 0, 1e-3, 1e-2 (the headline ``python attack.py -m attack=inversion
tv_lambda=0,1e-3,1e-2``) with the default config otherwise, times (a) the engine: building the
``ReconstructionModule`` and fitting it with a Lightning ``Trainer`` built from ``cfg.trainer``
(no logger, no progress bar) and (b) the same optimisation as a plain loop: same init, batch
(classes × restarts), priors (TV, L2, jitter, blur), Adam, clamping and best-iterate tracking.
Both use the frozen default target. Prints per-variant times and the ratio engine / hand-written
(the project's bar: ≤ 1.3 on CPU). Target and evaluator provisioning, scoring and figures are
outside both timings (they are the same for any optimisation loop).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from privacy_attacks.attacks.inversion.attack import build_module
from privacy_attacks.engine.module import fit_reconstruction
from privacy_attacks.seeding import generator
from privacy_attacks.targets import provision_target

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
TV_LAMBDAS = ("0", "1e-3", "1e-2")


def compose_cfg(overrides: list[str]):
    work = tempfile.mkdtemp(prefix="bench_inversion_")
    base = [f"data.root={os.environ.get('MNIST_ROOT', 'data')}", "logger=none", f"paths.output_dir={work}"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="attack", overrides=[*base, "attack=inversion", *overrides])


def hand_written(cfg, net: torch.nn.Module) -> torch.Tensor:
    """The default inversion as a plain PyTorch loop (what the engine does for this config)."""
    labels = torch.arange(10)
    batch_labels = labels.repeat(cfg.restarts)
    shape = (cfg.restarts * 10, 1, 28, 28)
    images = instantiate(cfg.inits[cfg.init])(shape, generator(cfg.seed, "init")).requires_grad_(True)
    jitter = instantiate(cfg.priors.jitter)
    jitter.use_generator(generator(cfg.seed, "prior", "jitter"))
    similarity = instantiate(cfg.losses[cfg.loss])
    optimizer = torch.optim.Adam([images], lr=cfg.lr)
    best_loss, best_images = torch.full((shape[0],), float("inf")), images.detach().clone()
    blur = instantiate(cfg.priors.blur) if cfg.blur_sigma > 0 else None
    for step in range(cfg.steps):
        optimizer.zero_grad()
        x = images
        if cfg.jitter > 0:
            x = jitter.transform(x)  # every image by its own offset
        losses = similarity(net(x), batch_labels)
        if cfg.tv_lambda > 0:
            tv = (
                (images[..., :, 1:] - images[..., :, :-1]).pow(2).sum((1, 2, 3))
                + (images[..., 1:, :] - images[..., :-1, :]).pow(2).sum((1, 2, 3))
            ) / 784
            losses = losses + cfg.tv_lambda * tv
        if cfg.l2_lambda > 0:
            losses = losses + cfg.l2_lambda * images.pow(2).flatten(1).mean(1)
        with torch.no_grad():
            improved = losses < best_loss
            best_loss = torch.where(improved, losses, best_loss)
            best_images[improved] = images[improved]
        losses.sum().backward(inputs=[images])
        optimizer.step()
        with torch.no_grad():
            if blur is not None:
                images.copy_(blur.project(images, step))
            images.clamp_(0, 1)
    return best_images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("overrides", nargs="*", help="extra config overrides, e.g. steps=100")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfgs = [compose_cfg([f"tv_lambda={tv}", *args.overrides]) for tv in TV_LAMBDAS]
    net = provision_target(cfgs[0]).net
    trainer_overrides = dict(enable_progress_bar=False)
    fit_reconstruction(build_module(cfgs[0], net, torch.arange(10)), cfgs[0].trainer, **trainer_overrides)  # warm-up
    hand_written(cfgs[0], net)
    engine_times, hand_times = [], []
    for _ in range(args.repeats):
        start = time.perf_counter()
        for cfg in cfgs:
            torch.manual_seed(cfg.seed)
            fit_reconstruction(build_module(cfg, net, torch.arange(10)), cfg.trainer, **trainer_overrides)
        engine_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        for cfg in cfgs:
            torch.manual_seed(cfg.seed)
            hand_written(cfg, net)
        hand_times.append(time.perf_counter() - start)
    engine, hand = statistics.median(engine_times), statistics.median(hand_times)
    cfg = cfgs[0]
    print(
        f"3 jobs (tv_lambda={','.join(TV_LAMBDAS)}), {cfg.steps} steps, batch {cfg.restarts * 10}, {cfg.optimizer}, "
        f"torch threads {torch.get_num_threads()}, median of {args.repeats}"
    )
    print(f"engine (Lightning): {engine:.2f} s   hand-written loop: {hand:.2f} s   ratio {engine / hand:.2f}")


if __name__ == "__main__":
    main()
