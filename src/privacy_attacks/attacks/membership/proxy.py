"""The lecture's membership attack (成员推理): a proxy by distillation, then a behaviour classifier.

Lecture, "攻击策略": (1) distil a local proxy of the target (通过模型蒸馏，在本地训练一个目标模型的
代理模型); (2) train a classifier on the proxy's different behaviour on its own training images
and on images it did not train on (利用代理模型在代理训练集与非训练集上的行为差异训练分类器);
(3) use it to decide whether an image was in the target's training set.

Here: the attacker splits its own images into a proxy training half (``train_size`` images,
queried through the black-box API once each) and a held-out half; the proxy (the target's
architecture) is distilled on the answers with the stealing module's :func:`distil`, as long as
the target's recipe trains (so it memorises its training images about as much as the target
memorised its own). The attack classifier learns proxy outputs on the training half
(member = 1) versus the held-out half (0) and is applied to the target's answers on the
evaluation set. Shokri et al. 2017 use shadow models trained on true labels instead; the proxy
needs no labels beyond the ones its features use.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from hydra.utils import instantiate

from privacy_attacks.attacks.stealing.distillation import distil
from privacy_attacks.errors import ConfigError, require_choice

from .base import AttackContext, AttackOutput
from .classifier import fit_attack_classifier
from .scores import FEATURES, attack_features


class ProxyAttack:
    """Proxy-by-distillation membership attack (the lecture's).

    Args:
        features: attack-classifier features, names of
            :data:`~privacy_attacks.attacks.membership.scores.FEATURES` (``sorted``, ``top_k``,
            ``label``, ``loss``, ``logit``).
        top_k: k of the ``top_k`` feature.
        loss: distillation loss (the stealing module's ``mse``, ``kl``, ``kl_hinton``, ``soft_ce``, ``hard``).
        temperature: distillation temperature (``kl``, ``kl_hinton``).
        shift: random-shift augmentation while distilling, in pixels (0 lets the proxy memorise).
        hidden, epochs, lr: the attack classifier's MLP widths, epochs and learning rate.
    """

    def __init__(
        self,
        features: Sequence[str] = ("sorted", "loss"),
        top_k: int = 3,
        loss: str = "soft_ce",
        temperature: float = 1.0,
        shift: int = 0,
        hidden: Sequence[int] = (64,),
        epochs: int = 60,
        lr: float = 1e-3,
    ):
        for name in features:
            require_choice(name, FEATURES, "proxy features")
        self.features, self.top_k = list(features), top_k
        self.loss, self.temperature, self.shift = loss, temperature, shift
        self.hidden, self.epochs, self.lr = list(hidden), epochs, lr

    def check_sizes(self, train_size: int, eval_size: int, attacker_size: int) -> None:
        """:class:`ConfigError` unless the attacker holds 2 x ``train_size`` images (proxy half and held-out half)."""
        if attacker_size < 2 * train_size:
            raise ConfigError(
                f"attacker_size={attacker_size} is too small for the proxy attack: it needs a proxy training set and a "
                f"held-out set of shadow_train_size={train_size} images each ({2 * train_size} images)."
            )

    def __call__(self, context: AttackContext) -> AttackOutput:
        n, recipe = context.train_size, context.recipe
        own, own_labels = context.attacker_images[: 2 * n], context.attacker_labels[: 2 * n]
        torch.manual_seed(context.seed)
        steps = int(recipe.max_epochs) * math.ceil(n / int(recipe.batch_size))
        proxy = distil(
            context.api, own[:n], instantiate(recipe.net), self.loss, steps, context.trainer,
            temperature=self.temperature, optimizer=instantiate(recipe.optimizer), batch_size=int(recipe.batch_size),
            shift=self.shift, seed=context.seed,
        ).cpu()
        with torch.no_grad():
            proxy_log_probs = proxy(own).double().log_softmax(dim=-1)
        membership = torch.cat([torch.ones(n), torch.zeros(n)]).long()
        train_features = attack_features(proxy_log_probs, own_labels, self.features, self.top_k)
        classifier = fit_attack_classifier(
            train_features, membership, context.trainer, self.hidden, self.epochs, lr=self.lr, seed=context.seed
        )
        eval_features = attack_features(context.query_log_probs(context.eval_images), context.eval_labels, self.features, self.top_k)
        probability = classifier.member_probability(eval_features)
        correct = (proxy_log_probs.argmax(dim=1) == own_labels).float()
        info = {"proxy/train_acc": float(correct[:n].mean()), "proxy/heldout_acc": float(correct[n:].mean())}
        return AttackOutput(probability.double(), (probability > 0.5).long(), info)
