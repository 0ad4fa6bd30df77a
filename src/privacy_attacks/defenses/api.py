"""Defences of the black-box API: the service post-processes the target's class probabilities before it answers.

Each takes the probabilities (N, C) of a batch and returns the defended distribution (N, C), which the API's
output mode then reads (``probs`` returns it, ``label`` its top-1, ``rounded`` it rounded, ``logits`` its
logarithm). As in IBM ART's post-processors:

- :class:`TopK`: only the ``k`` largest probabilities (renormalised), the rest zero;
- :class:`Rounding`: probabilities rounded to ``decimals`` decimals;
- :class:`GaussianNoise`: Gaussian noise of standard deviation ``std`` on the probabilities, clipped at 0 and
  renormalised, drawn from the defender's own generator;
- :class:`ReverseSigmoid`: Lee, Edwards, Molloy & Srivastava 2019, "Defending against NN model stealing
  attacks using deceptive perturbations": y' ∝ y − β (σ(γ σ⁻¹(y)) − ½), clipped at 0 and renormalised;
- :class:`LabelOnly`: the one-hot vector of the top-1 class.

Every defence but the noise keeps each answer's top-1 class (tested); the API counts queries as before.
"""

from __future__ import annotations

import torch
from torch import Tensor

from privacy_attacks.errors import ConfigError, require_int, require_positive
from privacy_attacks.seeding import derive_seed


class OutputDefense:
    """Base class: ``defense(probs (N, C)) -> defended probabilities (N, C)``; ``surface`` names where it acts."""

    surface: str | None = "api"
    keeps_top1 = True
    reveals_scores = True  # whether an answer says more than its label (False: one class of probability 1)

    def __call__(self, probs: Tensor) -> Tensor:
        raise NotImplementedError

    def for_attacker(self, seed: int) -> OutputDefense:
        """The same mechanism as the attacker runs it on its own models' answers (``shadow_defense=true``): a
        deterministic defence is itself; a randomised one draws from a generator of the attacker's ``seed``."""
        return self

    def __repr__(self) -> str:
        settings = ", ".join(f"{k}={v}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({settings})"


class NoDefense(OutputDefense):
    """``defense=none``: the target as deployed, no post-processing."""

    surface = None

    def __call__(self, probs: Tensor) -> Tensor:
        return probs


class TopK(OutputDefense):
    """Only the ``k`` largest probabilities of each answer, renormalised to sum to 1; the others are zero."""

    def __init__(self, k: int = 1):
        require_int(k, "defense.k")
        self.k = int(k)

    def check_classes(self, num_classes: int, data: str) -> None:
        """:class:`ConfigError` when ``k`` exceeds the data's class count (no answer has that many entries)."""
        if self.k > num_classes:
            raise ConfigError(
                f"defense.k={self.k} is not allowed: data={data} has {num_classes} classes, so k must be at most "
                f"{num_classes}."
            )

    @property
    def reveals_scores(self) -> bool:  # k = 1 answers the top-1 class with probability 1: its label alone
        return self.k > 1

    def __call__(self, probs: Tensor) -> Tensor:
        top = probs.topk(min(self.k, probs.shape[-1]), dim=-1)
        kept = torch.zeros_like(probs).scatter(-1, top.indices, top.values)
        return kept / kept.sum(dim=-1, keepdim=True).clamp_min(1e-12)


class Rounding(OutputDefense):
    """Probabilities rounded to ``decimals`` decimals (composes with any output mode)."""

    def __init__(self, decimals: int = 2):
        require_int(decimals, "defense.decimals", minimum=0)
        self.decimals = int(decimals)

    @property
    def reveals_scores(self) -> bool:  # 0 decimals: each probability 0 or 1, a label at most
        return self.decimals > 0

    def __call__(self, probs: Tensor) -> Tensor:
        return probs.round(decimals=self.decimals)  # the top-1 stays a maximum (ties after rounding are the answer's)


class GaussianNoise(OutputDefense):
    """Gaussian noise N(0, ``std``²) added to each probability, clipped at 0 and renormalised; ``seed`` seeds the
    defender's generator (the attacker's seed never reaches it). The only defence here that can flip a top-1."""

    keeps_top1 = False

    def __init__(self, std: float = 0.1, seed: int = 0):
        require_positive(std, "defense.std")
        self.std, self.seed = float(std), int(seed)
        self._generator = torch.Generator().manual_seed(self.seed)

    def for_attacker(self, seed: int) -> GaussianNoise:
        return GaussianNoise(self.std, derive_seed(seed, "shadow_defense"))

    def __call__(self, probs: Tensor) -> Tensor:
        noise = torch.randn(probs.shape, generator=self._generator).to(probs.device, probs.dtype) * self.std
        noisy = (probs + noise).clamp_min(0)
        total = noisy.sum(dim=-1, keepdim=True)
        uniform = torch.full_like(probs, 1.0 / probs.shape[-1])
        return torch.where(total > 0, noisy / total.clamp_min(1e-12), uniform)


class ReverseSigmoid(OutputDefense):
    """Lee et al. 2019's reverse sigmoid: y' = normalise(clip(y − β (σ(γ logit(y)) − ½), 0)), with ``beta`` β > 0
    and ``gamma`` γ > 0. The perturbation flattens confident answers, which misleads a student trained on them.
    It can also lift a tiny probability above a low top-1 (the map is not monotone near 0); as a deployed
    service would, the answer keeps its top-1: where the perturbation would change it, the original top-1 class
    takes the largest defended value and the class that had it takes the top-1's."""

    def __init__(self, beta: float = 1.0, gamma: float = 0.1):
        require_positive(beta, "defense.beta")
        require_positive(gamma, "defense.gamma")
        self.beta, self.gamma = float(beta), float(gamma)

    def __call__(self, probs: Tensor) -> Tensor:
        clipped = probs.clamp(1e-6, 1 - 1e-6)
        perturbation = self.beta * (torch.sigmoid(self.gamma * torch.logit(clipped)) - 0.5)
        defended = (probs - perturbation).clamp_min(0)
        defended = defended / defended.sum(dim=-1, keepdim=True).clamp_min(1e-12)
        top1 = probs.argmax(dim=-1, keepdim=True)
        new_top = defended.argmax(dim=-1, keepdim=True)
        top1_value, new_value = defended.gather(-1, top1), defended.gather(-1, new_top)
        return defended.scatter(-1, new_top, top1_value).scatter(-1, top1, new_value)  # a no-op where they agree


class LabelOnly(OutputDefense):
    """The one-hot vector of the top-1 class: a probability API that reveals only the label."""

    reveals_scores = False

    def __call__(self, probs: Tensor) -> Tensor:
        return torch.zeros_like(probs).scatter(-1, probs.argmax(dim=-1, keepdim=True), 1.0)


# Probabilities below this are read as this when a defended answer's logarithm is taken (as the API does).
UTILITY_PROB_FLOOR = 1e-12


@torch.no_grad()
def api_utility(
    net: torch.nn.Module, defense: OutputDefense | None, images: Tensor, labels: Tensor, batch_size: int = 2500
) -> dict[str, float]:
    """What a defence costs an honest user of the API, measured by the experimenter (not queries, not counted).

    Returns ``api/top1_acc``, the accuracy of the defended answers' top-1 class on ``images`` (N, C, H, W) /
    ``labels`` (N,), and ``api/kl_from_undefended``, the mean KL(undefended ‖ defended) of the answers'
    distributions in nats (defended probabilities floored at 1e-12). ``defense`` None: the undefended API.
    """
    device = next(net.parameters()).device
    correct, kl_sum = 0, 0.0
    for start in range(0, len(images), batch_size):
        x, y = images[start : start + batch_size].to(device), labels[start : start + batch_size].to(device)
        probs = net(x).float().softmax(dim=-1)
        defended = probs if defense is None else defense(probs)
        correct += int((defended.argmax(dim=-1) == y).sum())
        log_defended = defended.clamp_min(UTILITY_PROB_FLOOR).log()
        kl_sum += float((probs * (probs.clamp_min(UTILITY_PROB_FLOOR).log() - log_defended)).sum())
    return {"api/top1_acc": correct / len(images), "api/kl_from_undefended": kl_sum / len(images)}
