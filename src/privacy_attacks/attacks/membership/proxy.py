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
from collections.abc import Mapping, Sequence

import torch
from hydra.utils import instantiate
from torch import Tensor, nn

from privacy_attacks.attacks.stealing.distillation import distil
from privacy_attacks.attacks.stealing.losses import DistillationLoss, HardLabel
from privacy_attacks.attacks.stealing.stacked import fit_students, students_refusal
from privacy_attacks.errors import ConfigError
from privacy_attacks.seeding import derive_seed, seeded

from .base import AttackContext, AttackOutput, MembershipAttack
from .classifier import fit_attack_classifier
from .scores import FeatureFunction, attack_features, chosen_features


class ProxyAttack(MembershipAttack):
    """Proxy-by-distillation membership attack (the lecture's).

    Args:
        features: attack-classifier features, names of ``attack_features`` (``sorted``, ``top_k``, ``label``,
            ``loss``, ``logit``).
        attack_features: name -> feature function, (log_probs (N, C), labels (N,)) -> (N, d): the config's
            ``attack_features`` (conf/attack/membership.yaml), built.
        loss: the distillation loss, a node of ``losses`` (``conf/attack/_losses.yaml``) instantiated by the
            config (``methods.proxy.loss: ${losses.hard}``); default :class:`HardLabel`, the label loss.
        shift: random-shift augmentation while distilling, in pixels (0 lets the proxy memorise).
        reference: distil a second, reference proxy for difficulty calibration (3 x ``train_size`` images).
        hidden, epochs, lr: the attack classifier's MLP widths, epochs and learning rate.
    """

    def __init__(
        self,
        features: Sequence[str],
        attack_features: Mapping[str, FeatureFunction],
        loss: DistillationLoss | None = None,
        shift: int = 0,
        reference: bool = True,
        hidden: Sequence[int] = (64,),
        epochs: int = 60,
        lr: float = 1e-3,
    ):
        self.features = list(features)
        self.feature_functions = chosen_features(attack_features, self.features, "features")
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

    def roles(self) -> list[str]:
        """The proxies this attack distils, by role: ``proxy`` (and ``reference_proxy``)."""
        return ["proxy", "reference_proxy"] if self.reference else ["proxy"]

    def distillation_images(self, context: AttackContext, role: str) -> Tensor:
        """The attacker's images a proxy of ``role`` is distilled on: the first ``train_size`` (the proxy), or the
        third block of ``train_size`` (the reference proxy; the second block is the classifier's held-out set)."""
        n = context.train_size
        return context.attacker_images[:n] if role == "proxy" else context.attacker_images[2 * n : 3 * n]

    def untrained_proxy(self, context: AttackContext, role: str) -> nn.Module:
        """A network of the attacker's recipe, its initial weights drawn from the attack's seed and ``role``."""
        with seeded(context.seed, role):
            return instantiate(context.recipe.net)

    def distillation_steps(self, context: AttackContext) -> int:
        """The proxy's steps: as many as the target's recipe takes on ``train_size`` images."""
        recipe = context.recipe
        return int(recipe.max_epochs) * math.ceil(context.train_size / int(recipe.batch_size))

    def _distil_proxy(self, context: AttackContext, role: str) -> nn.Module:
        """A proxy of the target's architecture distilled on its role's images (one query each), as the target's
        recipe trains; its initial weights and batch order come from the attack's seed and ``role``."""
        recipe = context.recipe
        return distil(
            context.api,
            self.distillation_images(context, role),
            self.untrained_proxy(context, role),
            self.loss,
            self.distillation_steps(context),
            context.trainer,
            optimizer=instantiate(recipe.optimizer),
            batch_size=int(recipe.batch_size),
            shift=self.shift,
            seed=derive_seed(context.seed, role, "fit"),
        ).cpu()

    def _features(self, log_probs: Tensor, reference_log_probs: Tensor | None, labels: Tensor) -> Tensor:
        parts = [attack_features(log_probs, labels, self.feature_functions)]
        if reference_log_probs is not None:
            parts.append(attack_features(reference_log_probs, labels, self.feature_functions))
        return torch.cat(parts, dim=1)

    def __call__(self, context: AttackContext) -> AttackOutput:
        return self.classify(context, [self._distil_proxy(context, role) for role in self.roles()])

    def classify(self, context: AttackContext, proxies: Sequence[nn.Module]) -> AttackOutput:
        """The attack once its proxies (one per :meth:`roles`, distilled) are trained: the classifier fitted on the
        proxy's behaviour, applied to the target's answers on the evaluation set."""
        n = context.train_size
        images, labels = context.attacker_images, context.attacker_labels
        proxy, reference = proxies[0], (proxies[1] if self.reference else None)
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


def proxies_refusal(attacks: Sequence[MembershipAttack]) -> str | None:
    """Why the proxies of these jobs' attacks cannot be distilled as one (a sentence), or None when they can: every
    job runs the proxy attack (the caller checks that their settings and recipes agree)."""
    if not all(isinstance(attack, ProxyAttack) for attack in attacks):
        kinds = ", ".join(sorted({type(attack).__name__ for attack in attacks}))
        return f"{kinds}: only the proxy attack's proxies are distilled across jobs"
    return None


def proxy_attacks_together(
    attacks: Sequence[ProxyAttack], contexts: Sequence[AttackContext], log_every: int = 50
) -> list[AttackOutput] | str:
    """Several jobs' proxy attacks with every proxy (each job's proxy and reference proxy) distilled as one
    vectorised model (:func:`~privacy_attacks.attacks.stealing.stacked.fit_students`): each job queries its own API
    on its own images, in the order it would alone, and keeps its own initial weights, batch order and shifts. Returns
    each job's output, or why the proxies cannot be stacked (then each job runs alone)."""
    reason = proxies_refusal(attacks)
    if reason is not None:
        return reason
    first, context = attacks[0], contexts[0]
    recipe = context.recipe
    jobs = [(attack, job, role) for attack, job in zip(attacks, contexts) for role in attack.roles()]
    nets = [attack.untrained_proxy(job, role) for attack, job, role in jobs]
    images = [attack.distillation_images(job, role) for attack, job, role in jobs]
    reason = students_refusal(nets, list(zip(images, images)), int(recipe.batch_size))
    if reason is not None:
        return reason
    data = [(x, job.api.query(x)) for x, (_, job, _) in zip(images, jobs)]
    proxies, _ = fit_students(
        nets,
        data,
        [attack.loss for attack, _, _ in jobs],
        [job.api.output for _, job, _ in jobs],
        first.distillation_steps(context),
        instantiate(recipe.optimizer),
        torch.optim.lr_scheduler.CosineAnnealingLR,  # distil's schedule
        int(recipe.batch_size),
        [attack.shift for attack, _, _ in jobs],
        [derive_seed(job.seed, role, "fit") for _, job, role in jobs],
        context.device,
        log_every,
    )
    outputs, start = [], 0
    for attack, job in zip(attacks, contexts):
        count = len(attack.roles())
        outputs.append(attack.classify(job, proxies[start : start + count]))
        start += count
    return outputs
