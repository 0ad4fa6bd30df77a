"""Which of its restarts each output-inversion reconstruction keeps (``selection``).

``loss``: the restart whose best iterate has the lowest loss of the optimisation (the engine's choice).
``augmented``: the restart the target recognises most robustly, the mean probability of its class over ``views``
random rotations and rescalings of it: the final selection of Plug & Play attacks (Struppek, Hintersdorf, Correia,
Adler & Kersting, ICML 2022, "Plug & Play Attacks: Towards Robust and Flexible Model Inversion Attacks", §4.3), which
keeps the candidates whose class survives small changes rather than those that exploit the target's weak directions.
It queries only the target, and its views are drawn from the attack's seed.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from privacy_attacks.engine.priors import affine_warp
from privacy_attacks.errors import require_choice, require_fraction, require_int, require_positive
from privacy_attacks.seeding import generator

SELECTIONS = ("loss", "augmented")


def check_selection(method: str, views: int, degrees: float, scale: float) -> None:
    """ConfigError for an unknown ``selection`` or bad view settings, before any work."""
    require_choice(method, SELECTIONS, "selection")
    require_int(views, "selection_views")
    require_positive(degrees, "selection_degrees", allow_zero=True)
    require_fraction(scale, "selection_scale")


@torch.no_grad()
def augmented_confidence(
    net: nn.Module, images: Tensor, labels: Tensor, views: int, degrees: float, scale: float, seed: int
) -> Tensor:
    """The mean softmax probability of ``labels`` (N,) under ``net`` over ``views`` random views of each of
    ``images`` (R, N, C, H, W): rotated by up to ``degrees`` and rescaled by a factor in [1 - scale, 1 + scale]
    (one draw per view and image, the same for every restart). Returns (R, N)."""
    restarts, n = images.shape[:2]
    draws = generator(seed, "inversion", "selection")
    angle, size = 2 * torch.rand(2, views, n, generator=draws, dtype=torch.float64) - 1
    flat = images.reshape(restarts * n, *images.shape[2:])
    total = torch.zeros(restarts * n, dtype=torch.float64, device=images.device)
    classes = labels.to(images.device).repeat(restarts)
    for view in range(views):
        angles = (angle[view] * math.radians(degrees)).repeat(restarts).to(images.device)
        zooms = (1 / (1 + scale * size[view])).repeat(restarts).to(images.device)
        probs = net(affine_warp(flat, angles, zooms)).softmax(dim=-1)
        total += probs.gather(1, classes[:, None]).squeeze(1).double()
    return (total / views).view(restarts, n)


def select_restarts(
    candidates: Tensor,
    losses: Tensor,
    net: nn.Module,
    labels: Tensor,
    method: str = "loss",
    views: int = 32,
    degrees: float = 15.0,
    scale: float = 0.2,
    seed: int = 0,
) -> Tensor:
    """One of the R restarts ``candidates`` (R, N, C, H, W) for each of the N ``labels``: the lowest of ``losses``
    (R, N) (``loss``), or the highest :func:`augmented_confidence` (``augmented``). Returns (N, C, H, W)."""
    if method == "loss":
        best = losses.argmin(dim=0)
    else:
        weight = next(net.parameters(), None)  # the views go where the target runs
        on_net = candidates if weight is None else candidates.to(weight.device)
        best = augmented_confidence(net, on_net, labels, views, degrees, scale, seed).argmax(dim=0)
    return candidates[best.to(candidates.device), torch.arange(candidates.shape[1], device=candidates.device)]
