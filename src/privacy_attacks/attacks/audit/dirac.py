"""White-box gradient canaries of DP-SGD: Dirac canaries inserted into each step's clipped sum and observed in every
iterate (Steinke, Nasr & Jagielski 2023, §6; Nasr et al. 2023, "Tight Auditing of Differentially Private Machine
Learning", USENIX Security).

Threat model (stronger than the black-box audit's, stated as such): the auditor runs the training. Each of ``m``
canaries is a gradient, not an image: ``max_grad_norm`` times a unit vector on one coordinate of the flattened
trainable parameters (its own, drawn by the audit's seed), the largest gradient clipping lets one example contribute.
A canary that came up IN joins each step with the recipe's Poisson ``sample_rate`` q, like every training example, and
its gradient is added to the step's clipped sum before Opacus adds the noise; an OUT canary never joins.

Observation ``all_iterates``: the auditor reads each step's noised sum at every canary's coordinate and removes the
clipped sum of the training examples (it ran them: a post-processing of the transcript, independent of the
canaries' coins), leaving x_t = (canary in step t) + N(0, σ²) in units of ``max_grad_norm``, σ the noise multiplier.
Scores, higher = IN:

- ``likelihood_ratio``: Σ_t log((1 − q) + q exp((x_t − ½) / σ²)), the log-likelihood ratio of "IN" (each step a
  Bernoulli(q) mixture) against "OUT" (pure noise): the most powerful test of one canary (Neyman–Pearson); without
  noise (σ = 0) its order is that of the sum;
- ``sum``: Σ_t x_t, the dot product of the summed updates with the canary (Steinke et al.'s score).

Observation ``last_iterate``: the final model alone (and its initialisation, the auditor's): θ_0[c] − θ_T[c], how far
training moved the canary's coordinate against its gradient.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from torch import Tensor

from privacy_attacks.cache import tensor_digest
from privacy_attacks.errors import ConfigError
from privacy_attacks.seeding import generator

OBSERVATIONS = ("all_iterates", "last_iterate")
DIRAC_SCORES = ("likelihood_ratio", "sum")


def draw_dirac_canaries(seed: int, canaries: int, num_parameters: int) -> tuple[Tensor, Tensor]:
    """The audit's Dirac canaries: (coordinates (m,) long, distinct, of the flattened trainable parameters; included
    (m,) bool, each canary's fair coin), drawn from ``seed`` (``"dirac_coordinates"``, ``"canary_inclusion"``);
    ``canaries`` at most ``num_parameters``."""
    coordinates = torch.randperm(num_parameters, generator=generator(seed, "dirac_coordinates"))[:canaries]
    included = torch.rand(canaries, generator=generator(seed, "canary_inclusion")) < 0.5
    return coordinates, included


class DiracCanaries(L.Callback):
    """Inserts the Dirac canaries into a DP-SGD fit (:class:`~privacy_attacks.systems.ImageClassifier` with
    ``privacy``) and records what the auditor observes: :meth:`record`.

    Args:
        coordinates: (m,) long, each canary's coordinate in the flattened trainable parameters (in
            ``net.parameters()`` order).
        included: (m,) bool, the canaries that join the training.
        seed: the audit's seed; each step's Poisson draw of the canaries comes from it (``"dirac_sampling"``), apart
            from the recipe's own randomness (its batches and noise).
    """

    def __init__(self, coordinates: Tensor, included: Tensor, seed: int):
        self.coordinates, self.included, self.seed = coordinates.long(), included.bool(), int(seed)
        self._sampling = generator(seed, "dirac_sampling")
        m = len(coordinates)
        self._sum = torch.zeros(m, dtype=torch.float64)
        self._likelihood_ratio = torch.zeros(m, dtype=torch.float64)
        self._insertions = torch.zeros(m, dtype=torch.long)
        self._start: Tensor | None = None
        self._end: Tensor | None = None
        self._steps = 0
        self._noise_multiplier = math.nan
        self._sample_rate = math.nan

    @property
    def spec(self) -> dict[str, Any]:
        """What the canaries add to the trained target's cache key."""
        return {
            "kind": "dirac",
            "coordinates": tensor_digest(self.coordinates),
            "included": tensor_digest(self.included),
            "seed": self.seed,
        }

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        private = getattr(pl_module, "private", None)
        if private is None:
            raise ConfigError(
                "canary_kind=dirac inserts its canaries into DP-SGD's clipped sum: set defense=dpsgd (with "
                "defense.noise_multiplier=0 for clipping and sampling without noise)."
            )
        optimizer = private.optimizer
        self._noise_multiplier, self._sample_rate = float(optimizer.noise_multiplier), float(private.sample_rate)
        self._clip = float(optimizer.max_grad_norm)
        self._params = list(optimizer.params)
        self._slices = self._parameter_slices(self._params)
        if self._start is None:  # else restored from an interrupted fit's checkpoint: the first step's weights
            self._start = self._read(self._params, lambda p: p.detach())
        add_noise = optimizer.add_noise

        def add_noise_with_canaries() -> None:
            sampled = self.included & (torch.rand(len(self.included), generator=self._sampling) < self._sample_rate)
            real = self._read(self._params, lambda p: p.summed_grad)
            for p, (canary, local) in zip(self._params, self._slices, strict=True):
                if len(canary):
                    delta = torch.zeros(p.summed_grad.numel(), dtype=p.summed_grad.dtype, device=p.device)
                    delta[local.to(p.device)] = self._clip * sampled[canary].to(p.device, p.summed_grad.dtype)
                    p.summed_grad += delta.view_as(p.summed_grad)
            add_noise()  # p.grad = clipped sum (with the canaries) + noise, before the division by the batch size
            noised = self._read(self._params, lambda p: p.grad)
            self._observe((noised - real) / self._clip, sampled)

        optimizer.add_noise = add_noise_with_canaries

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._end = self._read(self._params, lambda p: p.detach())

    def state_dict(self) -> dict[str, Any]:
        """What was observed so far, and the canaries' sampling generator: saved in the fit's checkpoints, so that
        an interrupted fit goes on to the record of the uninterrupted one."""
        observed = {name: getattr(self, f"_{name}") for name in ("sum", "likelihood_ratio", "insertions", "start")}
        return {**observed, "steps": self._steps, "sampling": self._sampling.get_state()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        for name in ("sum", "likelihood_ratio", "insertions", "start"):
            setattr(self, f"_{name}", state_dict[name])
        self._steps = int(state_dict["steps"])
        self._sampling.set_state(state_dict["sampling"])

    def _parameter_slices(self, params: list[Tensor]) -> list[tuple[Tensor, Tensor]]:
        """Per parameter tensor: (positions among the canaries, flat offsets inside the tensor)."""
        total = sum(p.numel() for p in params)
        if len(self.coordinates) and int(self.coordinates.max()) >= total:
            raise ConfigError(f"a Dirac canary's coordinate is beyond the network's {total} trainable parameters.")
        slices, begin = [], 0
        for p in params:
            inside = (self.coordinates >= begin) & (self.coordinates < begin + p.numel())
            canary = inside.nonzero().flatten()
            slices.append((canary, self.coordinates[canary] - begin))
            begin += p.numel()
        return slices

    def _read(self, params: list[Tensor], field: Callable[[Tensor], Tensor]) -> Tensor:
        """(m,) float64: the canaries' coordinates of ``field(p)`` over the parameters."""
        values = torch.zeros(len(self.coordinates), dtype=torch.float64)
        for p, (canary, local) in zip(params, self._slices, strict=True):
            if len(canary):
                values[canary] = field(p).reshape(-1)[local.to(p.device)].detach().double().cpu()
        return values

    def _observe(self, x: Tensor, sampled: Tensor) -> None:
        """One step's observation x (m,) in units of the clipping norm: the canary (if in the step) plus noise."""
        q, sigma = self._sample_rate, self._noise_multiplier
        self._sum += x
        if sigma > 0:
            self._likelihood_ratio += torch.logaddexp(
                torch.tensor(math.log1p(-q), dtype=torch.float64), math.log(q) + (x - 0.5) / sigma**2
            )
        else:  # the ratio is infinite for any step holding the canary: order by the sum
            self._likelihood_ratio += x
        self._insertions += sampled.long()
        self._steps += 1

    def record(self) -> dict[str, Any]:
        """The auditor's observations, (m,) float64 each (``likelihood_ratio``, ``sum``, ``last_iterate``), the
        canaries' ``coordinates`` and coins (``included``), and the run's ``steps``, ``noise_multiplier``,
        ``sample_rate``; ``insertions`` (m,) counts each canary's steps, a diagnostic no score reads."""
        if self._start is None or self._end is None:
            raise RuntimeError("DiracCanaries.record() before a finished fit.")
        return {
            "coordinates": self.coordinates.clone(),
            "included": self.included.clone(),
            "likelihood_ratio": self._likelihood_ratio.clone(),
            "sum": self._sum.clone(),
            "last_iterate": self._start - self._end,
            "insertions": self._insertions.clone(),
            "steps": self._steps,
            "noise_multiplier": self._noise_multiplier,
            "sample_rate": self._sample_rate,
        }
