"""The lecture's membership attack (成员推理): a proxy by distillation, then a behaviour classifier.

Lecture, "攻击策略": (1) distil a local proxy of the target (通过模型蒸馏，在本地训练一个目标模型的
代理模型); (2) train a classifier on the proxy's different behaviour on its own training images
and on images it did not train on (利用代理模型在代理训练集与非训练集上的行为差异训练分类器);
(3) use it to decide whether an image was in the target's training set.

Here: the attacker splits its own images into a proxy training set (``train_size`` images,
queried through the black-box API once each) and a held-out set of the same size; the proxy (the
target's architecture) is distilled on the answers with the stealing module's :func:`distil`, as
long as the target's recipe trains. The default distillation loss is ``hard`` (cross-entropy on
the answered top-1 class): the proxy then memorises its training images the way the target
memorised its labelled members. With soft answers (``soft_ce``, ``kl``) it would learn the
target's *non-member* behaviour on those images (they are non-members of the target), and its
members would look like the target's non-members. The attack classifier learns proxy outputs on
the training set (member = 1) versus the held-out set (0) and is applied to the target's answers
on the evaluation set.

``reference=true`` adds difficulty calibration (Watson et al. 2022, "On the importance of
difficulty calibration in membership inference attacks"): a second proxy, distilled on a third
disjoint set of the attacker's images, never sees any image the classifier is trained or applied
on; its outputs are extra features, telling an image that is easy for every model from one the
attacked model memorised. The classifier sees (proxy, reference) outputs when fitted and
(target, reference) outputs when applied.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from hydra.utils import instantiate
from torch import Tensor, nn

from privacy_attacks.attacks.stealing.distillation import distil
from privacy_attacks.attacks.stealing.losses import DistillationLoss, HardLabel
from privacy_attacks.errors import ConfigError, require_choice
from privacy_attacks.seeding import derive_seed, seeded

from .base import AttackContext, AttackOutput, MembershipAttack
from .classifier import fit_attack_classifier
from .scores import FEATURES, attack_features


class ProxyAttack(MembershipAttack):
    """Proxy-by-distillation membership attack (the lecture's).

    Args:
        features: attack-classifier features, names of
            :data:`~privacy_attacks.attacks.membership.scores.FEATURES` (``sorted``, ``top_k``,
            ``label``, ``loss``, ``logit``).
        top_k: k of the ``top_k`` feature.
        loss: the distillation loss, a node of ``losses`` (``conf/attack/_losses.yaml``) instantiated by the
            config (``methods.proxy.loss: ${losses.hard}``); default :class:`HardLabel`, the label loss.
        shift: random-shift augmentation while distilling, in pixels (0 lets the proxy memorise).
        reference: distil a second, reference proxy for difficulty calibration (3 x ``train_size`` images).
        hidden, epochs, lr: the attack classifier's MLP widths, epochs and learning rate.
    """

    def __init__(
        self,
        features: Sequence[str] = ("sorted", "loss"),
        top_k: int = 3,
        loss: DistillationLoss | None = None,
        shift: int = 0,
        reference: bool = True,
        hidden: Sequence[int] = (64,),
        epochs: int = 60,
        lr: float = 1e-3,
    ):
        for name in features:
            require_choice(name, FEATURES, "proxy features")
        self.features, self.top_k = list(features), top_k
        self.loss = HardLabel() if loss is None else loss
        self.shift, self.reference = shift, bool(reference)
        self.hidden, self.epochs, self.lr = list(hidden), epochs, lr

    def check_sizes(self, train_size: int, eval_size: int, attacker_size: int) -> None:
        """:class:`ConfigError` unless the attacker holds a proxy training set, a held-out set (and a
        reference set) of ``train_size`` images each."""
        sets = 3 if self.reference else 2
        if attacker_size < sets * train_size:
            raise ConfigError(
                f"attacker_size={attacker_size} is too small for the proxy attack: it needs {sets} sets of "
                f"shadow_train_size={train_size} images ({sets * train_size} images)."
            )

    def queries_needed(self, train_size: int, eval_size: int, attacker_size: int) -> int:
        """Images asked of the target: the proxy's (and the reference proxy's) training set, then the evaluation set."""
        return (2 if self.reference else 1) * train_size + eval_size

    def _distil_proxy(self, context: AttackContext, images: Tensor, role: str) -> nn.Module:
        """A proxy of the target's architecture distilled on ``images`` (one query each), as the target's recipe
        trains; its initial weights and batch order come from the attack's seed and ``role``."""
        recipe = context.recipe
        steps = int(recipe.max_epochs) * math.ceil(len(images) / int(recipe.batch_size))
        with seeded(context.seed, role):
            net = instantiate(recipe.net)
        return distil(
            context.api,
            images,
            net,
            self.loss,
            steps,
            context.trainer,
            optimizer=instantiate(recipe.optimizer),
            batch_size=int(recipe.batch_size),
            shift=self.shift,
            seed=derive_seed(context.seed, role, "fit"),
        ).cpu()

    def _features(self, log_probs: Tensor, reference_log_probs: Tensor | None, labels: Tensor) -> Tensor:
        parts = [attack_features(log_probs, labels, self.features, self.top_k)]
        if reference_log_probs is not None:
            parts.append(attack_features(reference_log_probs, labels, self.features, self.top_k))
        return torch.cat(parts, dim=1)

    def __call__(self, context: AttackContext) -> AttackOutput:
        n = context.train_size
        images, labels = context.attacker_images, context.attacker_labels
        proxy = self._distil_proxy(context, images[:n], "proxy")
        reference = self._distil_proxy(context, images[2 * n : 3 * n], "reference_proxy") if self.reference else None
        own, own_labels = images[: 2 * n], labels[: 2 * n]  # proxy's training set, then held-out
        with torch.no_grad():
            proxy_log_probs = proxy(own).double().log_softmax(dim=-1)
            own_reference = reference(own).double().log_softmax(dim=-1) if reference is not None else None
            eval_reference = (
                reference(context.eval_images).double().log_softmax(dim=-1) if reference is not None else None
            )
        membership = torch.cat([torch.ones(n), torch.zeros(n)]).long()
        classifier = fit_attack_classifier(
            self._features(proxy_log_probs, own_reference, own_labels),
            membership,
            context.trainer,
            self.hidden,
            self.epochs,
            lr=self.lr,
            seed=context.seed,
        )
        target_log_probs = context.query_log_probs(context.eval_images)
        probability = classifier.member_probability(
            self._features(target_log_probs, eval_reference, context.eval_labels)
        )
        correct = (proxy_log_probs.argmax(dim=1) == own_labels).float()
        info = {"proxy/train_acc": float(correct[:n].mean()), "proxy/heldout_acc": float(correct[n:].mean())}
        return AttackOutput(probability.double(), (probability > 0.5).long(), info)
