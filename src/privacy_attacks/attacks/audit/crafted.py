"""Input-space canaries crafted to be detectable (``canary_kind=crafted``), for the black-box one-run audit.

A mislabelled canary is a natural image with a wrong label: what a model learns from the other images already moves
its score, and under DP-SGD its clipped gradient points where many training gradients point. Jagielski, Ullman &
Oprea 2020 ("Auditing Differentially Private Machine Learning: How Private is Private SGD?", NeurIPS; ClipBKD) craft
the poison in the direction the training data varies least, labelled with the class a clean model finds least likely,
so that its gradient survives clipping and no other example pushes against it. The one-run audit needs many distinct
canaries, each IN by its own coin, so each gets a pattern of its own in that subspace:

1. the ``pixels`` fraction of the image's positions (C·H·W) where the auditor's own images (the target's non-member
   pool) vary least (MNIST: the border, black in every digit): :func:`least_variance_mask`;
2. canary i: a random binary pattern on those positions (each lit with probability ``density``, the audit's seed,
   ``"canary_patterns"``), zero elsewhere, with a uniformly drawn label (``"canary_labels"``): :func:`random_patterns`;
   sparse patterns overlap little, so what the model learns from one canary moves the others' scores little;
3. optionally (``steps`` > 0) each pattern optimised for ``steps`` Adam steps (``lr``), on the mask only and within
   [0, 1], to lower the log-probability of its label under a reference model the auditor trains itself (the target's
   recipe on its members, no canaries, no defence, a seed derived from the audit's): :func:`craft_images`. Measured
   on MNIST, optimised patterns come to code their label, and the target then generalises from the IN canaries to
   the OUT ones of the same label, so the default leaves them as drawn (docs/membership.md).

Threat model: the black-box audit's (the auditor picks the canaries and reads the final model's outputs); the
reference model is the auditor's own training of the recipe (an auditor runs the training it audits).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from privacy_attacks.seeding import generator


def least_variance_mask(images: Tensor, fraction: float) -> Tensor:
    """(C, H, W) bool: the ``round(fraction · C·H·W)`` positions (at least one) where ``images`` (N, C, H, W) vary
    least across N; ties go to the earlier position."""
    variance = images.double().var(dim=0).flatten()
    count = max(1, round(fraction * variance.numel()))
    order = torch.sort(variance, stable=True).indices
    mask = torch.zeros(variance.numel(), dtype=torch.bool)
    mask[order[:count]] = True
    return mask.view(images.shape[1:])


def random_patterns(mask: Tensor, count: int, seed: int, density: float = 0.5) -> Tensor:
    """(count, C, H, W) float in {0, 1}: each position of ``mask`` (C, H, W) lit with probability ``density``, the
    rest 0, drawn from ``seed`` (``"canary_patterns"``)."""
    coins = torch.rand((count, *mask.shape), generator=generator(seed, "canary_patterns")) < density
    return (coins & mask).float()


def craft_images(
    net: nn.Module, patterns: Tensor, labels: Tensor, mask: Tensor, steps: int, lr: float, batch_size: int = 1000
) -> Tensor:
    """``patterns`` (m, C, H, W) after ``steps`` Adam steps (``lr``) lowering log p(``labels`` (m,) | x) under
    ``net`` (the auditor's reference model, left unchanged), moving the positions of ``mask`` (C, H, W) only and
    keeping them in [0, 1]; ``steps=0``: the patterns. Batches of ``batch_size`` canaries are independent problems
    (the loss is a sum of per-canary terms)."""
    if steps == 0:
        return patterns.clone()
    device = next(net.parameters()).device
    was_training = net.training
    net.eval()
    parts = []
    keep = mask.to(device).float()
    for start in range(0, len(patterns), batch_size):
        images = patterns[start : start + batch_size].to(device).clone().requires_grad_(True)
        targets = labels[start : start + batch_size].to(device)
        optimizer = torch.optim.Adam([images], lr=lr)
        for _ in range(steps):
            optimizer.zero_grad(set_to_none=True)
            log_probs = net(images).log_softmax(dim=-1)
            log_probs.gather(1, targets[:, None]).sum().backward()
            images.grad.mul_(keep)
            optimizer.step()
            with torch.no_grad():
                images.clamp_(0.0, 1.0).mul_(keep)
        parts.append(images.detach().cpu())
    net.train(was_training)
    for parameter in net.parameters():
        parameter.grad = None
    return torch.cat(parts)
