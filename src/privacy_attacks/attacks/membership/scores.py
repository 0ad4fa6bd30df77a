"""Per-image membership signals computed from a classifier's answers.

Everything starts from log-probabilities ``log_probs`` (N, C) and true labels (N,); a higher score means "more
likely a member". Working in log space keeps the signals apart where probabilities round to 1.0 in float32 (a
memorised image has p_y = 1 - 1e-9). The scores an attack can name are the config's ``scores`` nodes
(conf/attack/_scores.yaml): a new one is a function, here or in a module of one's own, and a node there.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import Tensor

from privacy_attacks.errors import ConfigError, require_choice
from privacy_attacks.harness import build_node

ScoreFunction = Callable[[Tensor, Tensor], Tensor]


def _others(log_probs: Tensor, labels: Tensor) -> Tensor:
    """log-probabilities (N, C) with the true class set to -inf."""
    return log_probs.scatter(1, labels[:, None], float("-inf"))


def loss_score(log_probs: Tensor, labels: Tensor) -> Tensor:
    """Minus the cross-entropy loss, log p_y (Yeom et al. 2018, "Privacy risk in machine learning")."""
    return log_probs.gather(1, labels[:, None]).squeeze(1)


def confidence_score(log_probs: Tensor, labels: Tensor) -> Tensor:
    """The top-1 confidence, as log max_c p_c (label-free)."""
    return log_probs.max(dim=1).values


def entropy_score(log_probs: Tensor, labels: Tensor) -> Tensor:
    """Minus the prediction entropy, sum_c p_c log p_c (label-free; Salem et al. 2019)."""
    return (log_probs.exp() * log_probs).sum(dim=1)


def modified_entropy_score(log_probs: Tensor, labels: Tensor) -> Tensor:
    """Minus the modified entropy of Song & Mittal 2021 ("Systematic evaluation of privacy risks"):

    Mentr(p, y) = -(1 - p_y) log p_y - sum_{c != y} p_c log(1 - p_c).
    ``1 - p_y`` is summed from the other classes (no cancellation near p_y = 1).
    """
    log_py = loss_score(log_probs, labels)
    others = _others(log_probs, labels)
    one_minus_py = others.logsumexp(dim=1).exp()
    log_one_minus_p = torch.log1p(-log_probs.exp().clamp(max=1 - 1e-15))
    others_term = (others.exp() * log_one_minus_p).sum(dim=1)
    modified_entropy = -one_minus_py * log_py - others_term
    return -modified_entropy


def logit_confidence(log_probs: Tensor, labels: Tensor) -> Tensor:
    """The logit-scaled confidence phi = log(p_y / (1 - p_y)) of Carlini et al. 2022 (LiRA), computed
    as log p_y - logsumexp_{c != y} log p_c, so it stays finite and accurate for p_y near 1."""
    return loss_score(log_probs, labels) - _others(log_probs, labels).logsumexp(dim=1)


def hinge_score(log_probs: Tensor, labels: Tensor) -> Tensor:
    """The hinge (logit margin) log p_y - max_{c != y} log p_c, equal to z_y - max_{c != y} z_c for the logits z
    (Carlini et al. 2022; the score of Bertran et al. 2023's quantile regression)."""
    return loss_score(log_probs, labels) - _others(log_probs, labels).max(dim=1).values


def chosen_function(nodes: Mapping[str, Any], name: str, key: str, group: str) -> Callable[[Tensor, Tensor], Tensor]:
    """The function ``name`` of ``nodes`` (name -> the config's ``group`` node, built here, alone, so a broken node of
    another name is never built; or a node already built, or a function): :class:`ConfigError` naming ``key`` for a
    name that is not there, or naming the node when it builds no function of (log_probs, labels)."""
    require_choice(name, list(nodes), key)
    function = nodes[name]
    if (isinstance(function, Mapping) or OmegaConf.is_config(function)) and "_target_" in function:
        if not function.get("_partial_", False):
            raise ConfigError(
                f"{group}.{name} needs _partial_: true, so that it builds its function of (log_probs, labels) "
                "rather than calling it."
            )
        function = build_node(function, f"{group}.{name}")
    if not callable(function):
        raise ConfigError(
            f"{group}.{name} builds a {type(function).__name__}, not a function of (log_probs, labels): its node "
            "needs _partial_: true."
        )
    return function


def chosen_score(scores: Mapping[str, Any], name: str, key: str) -> ScoreFunction:
    """The score ``name`` of ``scores`` (conf/attack/_scores.yaml), as :func:`chosen_function` builds it."""
    return chosen_function(scores, name, key, "scores")


FeatureFunction = Callable[[Tensor, Tensor], Tensor]


def sorted_log_probs(log_probs: Tensor, labels: Tensor) -> Tensor:
    """The whole probability vector sorted, as log-probabilities: (N, C)."""
    return log_probs.sort(dim=1, descending=True).values


def top_log_probs(log_probs: Tensor, labels: Tensor, k: int = 3) -> Tensor:
    """The ``k`` largest log-probabilities: (N, k)."""
    return log_probs.sort(dim=1, descending=True).values[:, :k]


def one_hot_label(log_probs: Tensor, labels: Tensor) -> Tensor:
    """The true label, one-hot: (N, C)."""
    return F.one_hot(labels, log_probs.shape[1]).to(log_probs.dtype)


def loss_feature(log_probs: Tensor, labels: Tensor) -> Tensor:
    """The cross-entropy loss on the true label: (N, 1)."""
    return -loss_score(log_probs, labels)[:, None]


def logit_feature(log_probs: Tensor, labels: Tensor) -> Tensor:
    """The logit-scaled true-class confidence (:func:`logit_confidence`): (N, 1)."""
    return logit_confidence(log_probs, labels)[:, None]


def chosen_features(available: Mapping[str, Any], names: Sequence[str], key: str) -> dict[str, FeatureFunction]:
    """The features ``names`` of ``available`` (the config's ``attack_features`` nodes), in order, each as
    :func:`chosen_function` builds it."""
    return {name: chosen_function(available, name, key, "attack_features") for name in names}


def attack_features(log_probs: Tensor, labels: Tensor, features: Mapping[str, FeatureFunction]) -> Tensor:
    """The attack classifier's input (Shokri et al. 2017; Salem et al. 2019): ``features``' outputs, each (N, d_i),
    concatenated, (N, sum d_i), float32. Log-probabilities are floored at -100 so a rounded-to-zero probability stays
    finite."""
    log_probs = log_probs.clamp_min(-100.0)
    return torch.cat([feature(log_probs, labels) for feature in features.values()], dim=1).float()
