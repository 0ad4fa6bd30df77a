"""Benchmark: the headline distillation sweep on the framework vs a minimal hand-written PyTorch loop.

    MNIST_ROOT=../shared/data python benchmarks/bench_distillation.py [--threads N] [--budgets 100,500] [overrides ...]

For the 10 jobs of ``python attack.py -m attack=distillation loss=mse,kl
query_budget=100,500,1000,5000,10000`` (default config otherwise: queries=mnist, api.output=probs),
times, job by job and interleaved (so load from other processes hits both alike):

(a) the framework: ``run_attack(cfg)``, the whole job as ``attack.py`` runs it (validation, cached
    target, pool, black-box queries, Lightning fit of ``StudentDistillation`` from ``cfg.trainer``
    with the TensorBoard logger, evaluation, ``student.pt`` and ``metrics.json``), without progress bar;
(b) a plain PyTorch loop training the same student: same pool images, one query each, same steps
    (the config's schedule), batch size, random shifts, loss, Adam and per-step cosine schedule,
    then the same evaluation.

Prints a per-job table (steps, times, agreement of both) and the total ratio framework / hand-written
(the project's bar: <= 1.3 on CPU). Target provisioning happens once before timing.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import tempfile
import time
import warnings
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from privacy_attacks.attacks.stealing.attack import schedule_steps, student_shift
from privacy_attacks.attacks.stealing.distillation import fidelity_metrics, random_shift
from privacy_attacks.attacks.stealing.pools import evaluation_split
from privacy_attacks.pipelines import run_attack
from privacy_attacks.seeding import derive_seed, seeded
from privacy_attacks.targets import provision_target

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
LOSSES = ("mse", "kl")
BUDGETS = (100, 500, 1000, 5000, 10000)


def compose_cfg(overrides: list[str], output_dir: str):
    base = [
        f"data.root={os.environ.get('MNIST_ROOT', 'data')}",
        "data.download=false",
        f"paths.output_dir={output_dir}",
        "+trainer.enable_progress_bar=false",
    ]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="attack", overrides=[*base, "attack=distillation", *overrides])


def hand_written(cfg, target: torch.nn.Module) -> dict[str, float]:
    """One distillation job as a plain loop (what the framework does for this config, with the same derived seeds)."""
    images = instantiate(cfg.pools[cfg.queries]).take(cfg.query_budget, seed=derive_seed(cfg.seed, "queries"))
    with torch.no_grad():
        answers = target(images).softmax(-1)  # api.output=probs, one query per image
    with seeded(cfg.seed, "student"):
        student = instantiate(cfg.student.net)
    loss_fn = instantiate(cfg.losses[cfg.loss])
    mode = instantiate(cfg.api.outputs[cfg.api.output])
    steps, batch_size = schedule_steps(cfg), min(cfg.student.batch_size, cfg.query_budget)
    optimizer = torch.optim.Adam(student.parameters(), lr=cfg.student.optimizer.lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    fit_seed = derive_seed(cfg.seed, "student", "fit")
    generator, done = torch.Generator().manual_seed(fit_seed), 0
    student.train()
    with seeded(fit_seed, "shifts"):
        while done < steps:
            order = torch.randperm(len(images), generator=generator)
            for start in range(0, len(images) - batch_size + 1, batch_size):
                if done == steps:
                    break
                index = order[start : start + batch_size]
                loss = loss_fn(student(random_shift(images[index], student_shift(cfg))), answers[index], mode)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                scheduler.step()
                done += 1
    eval_images, eval_labels = evaluation_split(cfg.data.root)
    return fidelity_metrics(student.eval(), target, eval_images, eval_labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--losses", default=",".join(LOSSES), help="comma-separated losses (default: mse,kl)")
    parser.add_argument("--budgets", default=",".join(map(str, BUDGETS)), help="comma-separated query budgets")
    parser.add_argument(
        "overrides", nargs="*", help="extra config overrides for every job, e.g. schedule.max_steps=500"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore")
    work = Path(tempfile.mkdtemp(prefix="bench_distillation_"))
    cfgs = [
        compose_cfg([f"loss={loss}", f"query_budget={budget}", *args.overrides], str(work / f"{loss}-{budget}"))
        for loss in args.losses.split(",")
        for budget in args.budgets.split(",")
    ]
    target = provision_target(cfgs[0]).net
    evaluation_split(cfgs[0].data.root)  # load MNIST once, outside the timings (both share the cache)
    hand_written(compose_cfg(["query_budget=100", "schedule.steps=20"], str(work / "warmup")), target)
    print("| loss | query_budget | steps | framework s | hand-written s | agreement (framework) | agreement (hand) |")
    print("|---|---|---|---|---|---|---|")
    total_framework = total_hand = 0.0
    for cfg in cfgs:
        start = time.perf_counter()
        metrics = run_attack(cfg)
        framework = time.perf_counter() - start
        start = time.perf_counter()
        reference = hand_written(cfg, target)
        hand = time.perf_counter() - start
        total_framework, total_hand = total_framework + framework, total_hand + hand
        print(
            f"| {cfg.loss} | {cfg.query_budget} | {schedule_steps(cfg)} | {framework:.1f} | {hand:.1f} | "
            f"{metrics['student/agreement']:.4f} | {reference['student/agreement']:.4f} |",
            flush=True,
        )
    ratio = total_framework / total_hand if total_hand else math.nan
    print(
        f"\n{len(cfgs)} jobs, torch threads {torch.get_num_threads()}: framework {total_framework:.1f} s, "
        f"hand-written {total_hand:.1f} s, ratio {ratio:.2f} (bar: <= 1.3)"
    )


if __name__ == "__main__":
    main()
