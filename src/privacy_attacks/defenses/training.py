"""Defences of training: they change how the target is trained, so every attack on a trained target meets them.

- :class:`DPSGD`: differentially private SGD (Abadi et al. 2016, "Deep Learning with Differential Privacy") through
  Opacus (Yousefpour et al. 2021): each example's gradient clipped to L2 norm ``max_grad_norm``, the clipped sum
  plus Gaussian noise of standard deviation ``noise_multiplier · max_grad_norm``, divided by the expected batch
  size; batches drawn by Poisson sampling (each example joins each step's batch with probability ``sample_rate``);
  the privacy spent counted by an accountant (``rdp``: Mironov 2017; ``prv``: Gopi et al. 2021).

A training defence is part of the classifier's recipe (its ``privacy`` key, :func:`privacy_attacks.defenses.
recipe_with_defense`), hence of the checkpoint key: a private target is cached apart from the non-private one.
"""

from __future__ import annotations

import inspect
import logging
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from privacy_attacks.errors import ConfigError, require_bool, require_choice, require_positive

log = logging.getLogger(__name__)
ACCOUNTANTS = ("rdp", "prv")


class TrainingDefense:
    """Base class: a change to how a classifier is trained; ``surface`` names where it acts."""

    surface = "training"

    def __repr__(self) -> str:
        settings = ", ".join(f"{k}={v}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({settings})"


@dataclass
class PrivateTraining:
    """DP-SGD attached to one network and optimiser (:meth:`DPSGD.make_private`).

    Attributes:
        module: Opacus's ``GradSampleModule`` around the network: its hooks store each example's gradient in
            ``p.grad_sample`` (the network itself is unchanged, so its ``state_dict`` keeps its keys).
        optimizer: Opacus's ``DPOptimizer`` around the recipe's optimiser: clips, sums, adds noise, averages.
        accountant: counts every step taken (its history is ``(noise_multiplier, sample_rate, steps)``).
        noise_multiplier, sample_rate, delta: the settings the accountant sees.
        poisson_sampling: whether the batches were Poisson-sampled, as the accountant assumes (False: the reported
            ε counts a sampling that did not happen).
    """

    module: nn.Module
    optimizer: torch.optim.Optimizer
    accountant: Any
    noise_multiplier: float
    sample_rate: float
    delta: float
    poisson_sampling: bool = True

    def epsilon(self) -> float:
        """ε spent so far at ``delta`` (0 before any step; infinite without noise)."""
        if not self.accountant.history:
            return 0.0
        if self.noise_multiplier == 0:
            return math.inf
        return float(self.accountant.get_epsilon(delta=self.delta))

    def metrics(self) -> dict[str, float]:
        """``privacy/epsilon``, ``privacy/delta``, ``privacy/noise_multiplier``, ``privacy/sample_rate`` and
        ``privacy/poisson_sampling`` (1.0, or 0.0 when ε assumes a Poisson sampling that did not happen)."""
        return {
            "privacy/epsilon": self.epsilon(),
            "privacy/delta": float(self.delta),
            "privacy/noise_multiplier": float(self.noise_multiplier),
            "privacy/sample_rate": float(self.sample_rate),
            "privacy/poisson_sampling": 1.0 if self.poisson_sampling else 0.0,
        }

    def close(self) -> None:
        """Remove the per-example hooks from the network (it then trains and predicts as a plain module)."""
        self.module.cleanup()


class DPSGD(TrainingDefense):
    """DP-SGD through Opacus: per-example clipping, Gaussian noise, Poisson sampling and an accountant.

    Args:
        epsilon: the ε the training should spend (> 0); sets the noise when ``noise_multiplier`` is None.
        delta: the δ of the guarantee, in (0, 1); below 1 / (training images) to mean anything.
        noise_multiplier: the noise's standard deviation over ``max_grad_norm`` (>= 0); None: the smallest that
            keeps ε at most ``epsilon`` after the recipe's epochs at its sample rate (Opacus's
            ``get_noise_multiplier``). When given, ``epsilon`` is not a target: the ε reported is what was spent.
        max_grad_norm: each example's gradient is clipped to this L2 norm (> 0).
        accountant: ``rdp`` or ``prv``: how the spent ε is counted (and the noise derived).
        poisson_sampling: batches by Poisson sampling, as the accountant assumes (False: the recipe's shuffled
            batches of fixed size, as Opacus allows; ε then counts a sampling that did not happen).

    Example:
        >>> private = DPSGD(epsilon=8.0).make_private(net, torch.optim.Adam(net.parameters()), 128 / 55000, 128, 12)
        >>> private.optimizer.step()  # after a forward and backward pass of a batch through ``net``
    """

    def __init__(
        self,
        epsilon: float = 8.0,
        delta: float = 1e-5,
        noise_multiplier: float | None = None,
        max_grad_norm: float = 1.0,
        accountant: str = "rdp",
        poisson_sampling: bool = True,
    ):
        require_positive(epsilon, "defense.epsilon")
        require_positive(delta, "defense.delta")
        if delta >= 1:
            raise ConfigError(f"defense.delta={delta!r} is not allowed: it must be a number in (0, 1).")
        if noise_multiplier is not None:
            require_positive(noise_multiplier, "defense.noise_multiplier", allow_zero=True)
        require_positive(max_grad_norm, "defense.max_grad_norm")
        require_choice(accountant, ACCOUNTANTS, "defense.accountant")
        require_bool(poisson_sampling, "defense.poisson_sampling")
        self.epsilon, self.delta = float(epsilon), float(delta)
        self.noise_multiplier = None if noise_multiplier is None else float(noise_multiplier)
        self.max_grad_norm, self.accountant = float(max_grad_norm), accountant
        self.poisson_sampling = poisson_sampling

    def noise_multiplier_for(self, sample_rate: float, epochs: int) -> float:
        """The noise multiplier of ``epochs`` epochs at ``sample_rate``: the given one, or the smallest that spends at
        most ``epsilon`` (within Opacus's tolerance of 0.01)."""
        if self.noise_multiplier is not None:
            return self.noise_multiplier
        from opacus.accountants.utils import get_noise_multiplier

        try:
            return float(
                get_noise_multiplier(
                    target_epsilon=self.epsilon,
                    target_delta=self.delta,
                    sample_rate=sample_rate,
                    epochs=epochs,
                    accountant=self.accountant,
                )
            )
        except ValueError as error:  # "The privacy budget is too low."
            raise ConfigError(
                f"defense.epsilon={self.epsilon} at delta={self.delta} cannot be reached in {epochs} epochs at sample "
                f"rate {sample_rate:.4g} ({error})."
            ) from None

    def check_network(
        self, net: nn.Module, net_key: str = "model.net", name: str | None = None, takes_norm: bool | None = None
    ) -> None:
        """:class:`ConfigError` in one line when Opacus cannot take per-example gradients of ``net`` (batch norm mixes
        the examples of a batch: use a model's group-norm variant, ``<net_key>.norm=group``, e.g. ``model.net``);
        ``name``: the network's name in the message (default: its class); ``takes_norm``: whether its config chooses
        its normalisation (None: whether its class takes a ``norm`` argument)."""
        from opacus.validators import ModuleValidator

        errors = ModuleValidator.validate(net, strict=False)
        if errors:
            # Opacus explains each refused layer at length, once per layer: its first sentence, once per kind.
            listed = "; ".join(dict.fromkeys(str(error).replace("\n", " ").split(". ")[0] for error in errors))
            hint = ""
            if "BatchNorm" in listed:
                if takes_norm is None:
                    takes_norm = "norm" in inspect.signature(type(net).__init__).parameters
                hint = (
                    f" Use a model's group-norm variant ({net_key}.norm=group)."
                    if takes_norm
                    else " Build it with group norm (nn.GroupNorm) in place of its batch norm layers."
                )
            name = name or type(net).__name__
            raise ConfigError(f"defense=dpsgd cannot train {name} privately (Opacus: {listed}).{hint}")

    def make_private(
        self,
        net: nn.Module,
        optimizer: torch.optim.Optimizer,
        sample_rate: float,
        expected_batch_size: float,
        epochs: int,
    ) -> PrivateTraining:
        """Attach DP-SGD to ``net`` (trained with the mean cross-entropy of each batch) and its ``optimizer``.

        Args:
            net: the network; :class:`ConfigError` when Opacus cannot take per-example gradients of it (BatchNorm).
            optimizer: the recipe's optimiser over ``net``'s parameters.
            sample_rate: the probability that an example joins a step's batch (1 / steps per epoch).
            expected_batch_size: what a batch's clipped, noised sum is divided by (sample_rate × training images).
            epochs: the epochs the noise is derived for.
        """
        from opacus import GradSampleModule
        from opacus.accountants import create_accountant
        from opacus.optimizers import DPOptimizer

        self.check_network(net)
        noise = self.noise_multiplier_for(sample_rate, epochs)
        module = GradSampleModule(net, loss_reduction="mean")
        private = DPOptimizer(
            optimizer,
            noise_multiplier=noise,
            max_grad_norm=self.max_grad_norm,
            expected_batch_size=expected_batch_size,
            loss_reduction="mean",
        )
        accountant = create_accountant(self.accountant)
        private.attach_step_hook(accountant.get_optimizer_hook_fn(sample_rate=sample_rate))
        if not self.poisson_sampling:
            log.warning(
                "defense.poisson_sampling=false: the reported privacy/epsilon assumes Poisson sampling that did not "
                "happen (batches are shuffled, of fixed size); it is not a guarantee of this training."
            )
        return PrivateTraining(module, private, accountant, noise, sample_rate, self.delta, self.poisson_sampling)
