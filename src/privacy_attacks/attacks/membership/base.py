"""What every membership attack is, gets and returns: :class:`MembershipAttack`, :class:`AttackContext`,
:class:`AttackOutput`.

An attack is a :class:`MembershipAttack` built from its ``_target_`` node (``methods.<name>`` in
``conf/attack/membership.yaml``) and called as ``attack(context) -> AttackOutput``. It sees the
target only through the black-box API and the evaluation set only as images and labels: the
membership labels stay with :func:`privacy_attacks.attacks.membership.attack.run`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch import Tensor

from privacy_attacks.blackbox import BlackBoxAPI, defended_logits
from privacy_attacks.defenses.api import OutputDefense
from privacy_attacks.harness import run_device


def config_key(keys: Mapping[str, str] | None, argument: str) -> str:
    """The config key a user sets for a constructor ``argument``, as its errors name it: ``keys[argument]`` (a
    method node's ``keys``, for an argument fed from another key, e.g. ``methods.shadow.num_shadows``, or
    ``num_ref_models`` where an experiment sets ``num_shadows: ${num_ref_models}``), else the argument's name."""
    return (keys or {}).get(argument, argument)


@dataclass
class AttackContext:
    """The attacker's view.

    Attributes:
        api: the target behind its query API.
        eval_images: (N, C, H, W) images whose membership is to be inferred, in a random order;
            ``eval_labels`` (N,). No dataset index comes with them: from it and the public split seed
            membership could be rebuilt.
        attacker_images: (A, C, H, W) the attacker's own labelled images (non-members of the
            target, disjoint from the evaluation set); ``attacker_labels`` (A,).
        recipe: the attacker's guess of the target's training recipe (``conf/model/*.yaml``): shadow
            models and the proxy follow it.
        train_size: how many images the attacker assumes the target was trained on.
        trainer: the Lightning Trainer config for the attack's own fits.
        cache_dir: where shadow models are cached.
        seed: the attack's seed; every random draw of the attack derives its own seed from it
            (:func:`privacy_attacks.seeding.derive_seed`).
        shadow_defense: the API's output defence as the attacker runs it on its shadow and reference models'
            answers (``shadow_defense=true``: an attacker who knows how the API post-processes its answers);
            None: the attacker's models answer undefended.
    """

    api: BlackBoxAPI
    eval_images: Tensor
    eval_labels: Tensor
    attacker_images: Tensor
    attacker_labels: Tensor
    recipe: DictConfig
    train_size: int
    trainer: DictConfig
    cache_dir: Path
    seed: int = 0
    shadow_defense: OutputDefense | None = None

    @property
    def device(self) -> torch.device:
        """Where the attack's own models (shadow models) run: the device of ``trainer`` (``trainer=gpu``: the GPU)."""
        return run_device(self.trainer)

    def query_log_probs(self, images: Tensor) -> Tensor:
        """Query the target on ``images`` and return its answers as log-probabilities (N, C), float64."""
        answers = self.api.query(images)
        return self.api.output.scores(answers).double().log_softmax(dim=-1)

    def shadow_log_probs(self, logits: Tensor) -> Tensor:
        """The attacker's own models' logits (..., C) read as the API would answer them (its output mode, behind
        ``shadow_defense`` when set), as log-probabilities (..., C), float64: comparable with ``query_log_probs``."""
        mode = self.api.output
        return mode.scores(mode.answer(defended_logits(logits, self.shadow_defense))).double().log_softmax(dim=-1)


@dataclass
class AttackOutput:
    """An attack's verdict on the evaluation set.

    Attributes:
        scores: (N,) membership scores, higher = member.
        predictions: (N,) hard decisions (1 = member) at the attack's own threshold.
        info: extra numbers for ``metrics.json`` (e.g. the proxy's fidelity, shadow counts).
    """

    scores: Tensor
    predictions: Tensor
    info: dict[str, float] = field(default_factory=dict)


class MembershipAttack(ABC):
    """The contract of a membership method: subclass it, and add a ``_target_`` node under ``methods``.

    Its constructor takes the node's hyperparameters (and raises
    :class:`~privacy_attacks.errors.ConfigError` for bad ones). Before any work,
    :func:`~privacy_attacks.attacks.membership.attack.validate` calls :meth:`check_sizes` and
    :meth:`queries_needed` with ``(train_size, eval_size, attacker_size)``: the images the attacker assumes
    the target trained on (``shadow_train_size``), the evaluation images (members and non-members) and the
    attacker's own labelled images. :func:`~privacy_attacks.attacks.membership.attack.run` then calls the
    attack once on the :class:`AttackContext`.

    ``shadow_answers``: True for an attack that reads its shadow or reference models' answers through
    :meth:`AttackContext.shadow_log_probs` (``shadow_defense=true`` acts on those alone).

    Its errors name the key the user sets, which need not be the argument's own name: a method node's ``keys``
    maps an argument to that key (``keys: {num_shadows: methods.shadow.num_shadows}``; see :func:`config_key`).
    """

    shadow_answers: bool = False

    @abstractmethod
    def check_sizes(self, train_size: int, eval_size: int, attacker_size: int) -> None:
        """Raise :class:`~privacy_attacks.errors.ConfigError` for sizes this attack cannot use (e.g. too few
        of the attacker's own images for its shadow or proxy training sets)."""

    @abstractmethod
    def queries_needed(self, train_size: int, eval_size: int, attacker_size: int) -> int:
        """The number of images this attack will ask the target about, checked against ``query_budget``."""

    @abstractmethod
    def __call__(self, context: AttackContext) -> AttackOutput:
        """Score every evaluation image of ``context`` (higher = member), querying the target only through
        ``context.api``."""
