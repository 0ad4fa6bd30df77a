"""Time per reconstruction of gradient inversion on the engine vs the same optimisation as a minimal hand-written loop.

For each method (dlg, idlg, ig, ig_lbfgs) and batch size, both sides attack the same client gradient of the
sigmoid LeNet with the same optimiser, steps, restarts and initial images; the engine side is
``ReconstructionModule`` + ``fit_reconstruction`` (a Lightning Trainer) with the ``GradientMatching``
objective, the hand-written side a plain PyTorch loop (closure, sign, clamp, best-iterate). Bar: ratio ≤ 1.3.

    OMP_NUM_THREADS=1 python benchmarks/bench_gradient_inversion.py --steps 200 --repeats 3
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import torch
import torch.nn.functional as F

from privacy_attacks.attacks.gradient_inversion.client import SimulatedClient
from privacy_attacks.attacks.gradient_inversion.matching import CosineDistance, GradientMatching, SquaredL2Distance
from privacy_attacks.engine.inits import UniformInit
from privacy_attacks.engine.module import ReconstructionModule, fit_reconstruction
from privacy_attacks.engine.priors import TotalVariation, total_variation
from privacy_attacks.models.lenet_sigmoid import LeNetSigmoid

# method -> (distance, optimiser, signed gradients, TV weight, soft labels optimised, clamp each step),
# as in conf/attack/gradient_inversion.yaml (methods.<method>).
LBFGS = partial(torch.optim.LBFGS, lr=1.0, max_iter=1, history_size=100)
METHODS = {
    "dlg": (SquaredL2Distance, LBFGS, False, 0.0, True, False),
    "idlg": (SquaredL2Distance, LBFGS, False, 0.0, False, False),
    "ig": (CosineDistance, partial(torch.optim.Adam, lr=0.1), True, 1e-3, False, True),
    "ig_lbfgs": (CosineDistance, LBFGS, False, 0.0, False, False),
}


def hand_written(model, gradient, labels, init, soft, distance, optimizer, signed, tv, steps, clamp):
    """The same optimisation as a plain loop: returns the best images (B, 1, 28, 28)."""
    images = init.clone().requires_grad_(True)
    params = [images]
    if soft is not None:
        soft = soft.clone().requires_grad_(True)
        params.append(soft)
    opt = optimizer(params)
    weights = [p.detach() for p in model.parameters()]
    best, best_loss = images.detach().clone(), float("inf")
    for _ in range(steps):

        def closure():
            nonlocal best, best_loss
            opt.zero_grad()
            leaves = [w.requires_grad_(True) for w in (p.detach() for p in weights)]
            logits = torch.func.functional_call(model, dict(zip(names, leaves)), (images,))
            loss = (
                F.cross_entropy(logits, labels)
                if soft is None
                else -(F.softmax(soft, -1) * F.log_softmax(logits, -1)).sum(-1).mean()
            )
            dummy = torch.autograd.grad(loss, leaves, create_graph=True)
            total = distance(list(dummy), gradient) + tv * total_variation(images).sum()
            if total.item() < best_loss:
                best_loss, best = total.item(), images.detach().clone()
            total.backward(inputs=params)
            if signed:
                for p in params:
                    p.grad.sign_()
            return total

        opt.step(closure)
        if clamp:
            with torch.no_grad():
                images.clamp_(0, 1)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = LeNetSigmoid().eval().requires_grad_(False)
    global names
    names = [n for n, _ in model.named_parameters()]
    print("| method | batch | engine s | hand-written s | ratio |\n|---|---|---|---|---|")
    for method, (distance_cls, optimizer, signed, tv, optimise_labels, clamp) in METHODS.items():
        for batch in args.batch_sizes:
            images, labels = torch.rand(batch, 1, 28, 28), torch.randint(0, 10, (batch,))
            gradient = SimulatedClient(model, images, labels).shared_gradient()
            init = UniformInit()((batch, 1, 28, 28), torch.Generator().manual_seed(0))
            engine_times, hand_times = [], []
            for _ in range(args.repeats):
                torch.manual_seed(1)
                objective = GradientMatching(
                    model, gradient, batch, distance_cls(), labels=None if optimise_labels else labels
                )
                soft = objective.soft_labels.detach()[0] if optimise_labels else None
                module = ReconstructionModule(
                    objective,
                    priors={"tv": TotalVariation(tv)},
                    init=UniformInit(),
                    optimizer=optimizer,
                    steps=args.steps,
                    signed_gradients=signed,
                    clamp_each_step=clamp,
                )
                start = time.perf_counter()
                fit_reconstruction(module, {"accelerator": "cpu", "devices": 1}, enable_progress_bar=False)
                module.reconstructions()
                engine_times.append(time.perf_counter() - start)
                start = time.perf_counter()
                hand_written(
                    model, gradient, labels, init, soft, distance_cls(), optimizer, signed, tv, args.steps, clamp
                )
                hand_times.append(time.perf_counter() - start)
            engine, hand = min(engine_times), min(hand_times)
            print(f"| {method} | {batch} | {engine:.2f} | {hand:.2f} | {engine / hand:.2f} |", flush=True)


if __name__ == "__main__":
    main()
