"""``python attack.py attack=membership``: membership inference against a target with known members.

:func:`validate` stops bad input before any work; :func:`run` builds the split, the black-box
API and the attack chosen by ``method=`` (a ``_target_`` node of ``methods``), scores the
evaluation set, and writes ``metrics.json`` (through the pipeline), ``roc.png``, ``roc.csv`` and
``scores.pt`` into the run folder.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torchmetrics.functional.classification import multiclass_accuracy

from privacy_attacks.batched import net_device
from privacy_attacks.blackbox import BlackBoxAPI
from privacy_attacks.data.identity import data_name, data_shape, data_source, training_set_size
from privacy_attacks.data.source import SourceData
from privacy_attacks.defenses import api_utility, defense_from_config
from privacy_attacks.defenses.api import OutputDefense
from privacy_attacks.defenses.training import TrainingDefense
from privacy_attacks.engine.sweep import batch_note, run_grouped
from privacy_attacks.errors import ConfigError, UserError, require_bool, require_choice, require_int
from privacy_attacks.harness import build_loggers, build_node, finish_loggers
from privacy_attacks.io import output_dir
from privacy_attacks.targets import Target
from privacy_attacks.training import build_privacy, check_network

from .audit import epsilon_heuristic
from .base import AttackContext, AttackOutput, MembershipAttack
from .data import MembershipSplit, membership_split
from .figures import plot_roc, write_roc_csv
from .metrics import membership_metrics, roc_curve
from .proxy import ProxyAttack, proxy_attacks_together

log = logging.getLogger(__name__)
JobAttack = tuple[AttackContext, MembershipSplit, AttackOutput, float]  # a job's context, split, output, seconds


def build_split(cfg: DictConfig, total: int | None = None) -> MembershipSplit:
    """The split of ``cfg`` (see :mod:`privacy_attacks.attacks.membership.data`) of the ``total`` training images
    of the configured dataset (None: :func:`training_set_size`)."""
    if cfg.target.get("members") is None:
        raise ConfigError("attack=membership needs a target with known members: set target.members (e.g. 1000).")
    if total is None:
        total = training_set_size(cfg.data)
    return membership_split(
        cfg.data.val_size,
        cfg.data.split_seed,
        cfg.target.members,
        cfg.eval_members,
        cfg.attacker_size,
        cfg.attacker_offset,
        cfg.eval_seed,
        total,
        cfg.eval_set,
        cfg.eval_nonmembers,
        cfg.target.get("member_offset", 0) or 0,
    )


def build_attack(cfg: DictConfig) -> MembershipAttack:
    """The attack object of ``method`` (validated against the ``methods`` mapping): a :class:`MembershipAttack`."""
    require_choice(cfg.method, list(cfg.methods), "method")
    # Built from a resolved copy: instantiating the node itself resolves, in the job's config, the interpolations
    # inside the nodes it points to (attack_features.top_k.k), and the job would then no longer equal its group's.
    node = OmegaConf.create(OmegaConf.to_container(cfg.methods[cfg.method], resolve=True))
    return build_node(node, f"methods.{cfg.method}", MembershipAttack, "a membership attack", _convert_="all")


def validate(cfg: DictConfig, total: int | None = None) -> None:
    """Raise :class:`ConfigError` for an unknown method or output mode, a member count larger than
    the data, an evaluation set overlapping the attacker's data, sizes a method cannot use (an online method's
    shadow models hold half of the evaluation set: more non-members than they fit stop here), or a
    ``query_budget`` smaller than the queries the method makes (each attack's ``queries_needed``), or features
    sized by the class count that the data's classes cannot give (``top_k`` above ``data.num_classes``)."""
    prepare(cfg, total)


def prepare(cfg: DictConfig, total: int | None = None) -> tuple[MembershipAttack, MembershipSplit]:
    """The checks of :func:`validate` (``total``: the training set's size, None: the configured dataset's),
    returning the attack and the split they built."""
    attack = build_attack(cfg)
    check_classes(cfg, attack)
    recipe = shadow_recipe(cfg)  # shadow_privacy=true without a training defence stops here
    if cfg.get("attacker_net") is not None:  # the attacker's own network takes the data and, if asked, its DP-SGD
        check_network(recipe, "shadow_recipe", cfg.data, build_privacy(recipe), net_key="attacker_net")
    shadow_defense(cfg, attack)  # shadow_defense=true with a training defence, or for a method with no shadows
    require_choice(cfg.api.output, list(cfg.api.outputs), "api.output")
    delta = cfg.audit_delta
    if isinstance(delta, bool) or not isinstance(delta, (int, float)) or not 0 <= delta < 1:
        raise ConfigError(f"audit_delta={delta!r} is not allowed: it must be a number in [0, 1).")
    split = build_split(cfg, total)
    require_int(cfg.shadow_train_size, "shadow_train_size")
    sizes = (cfg.shadow_train_size, len(split.eval_indices), len(split.attacker))
    try:
        attack.check_sizes(*sizes)
    except ConfigError as error:
        if cfg.get("attacker_size") is None and "attacker_size" in str(error):
            raise ConfigError(
                f"{error} But attacker_size is null: the attacker already has all {len(split.attacker)} images the "
                "split leaves it, so more of them takes fewer target members, fewer evaluation images or a smaller "
                "data.val_size."
            ) from None
        raise
    budget = cfg.query_budget
    require_int(budget, "query_budget", null_means="no limit")
    needed = attack.queries_needed(*sizes)
    if budget is not None and budget < needed:
        raise ConfigError(
            f"query_budget={budget} is too small for method={cfg.method}: it asks the target about {needed} images "
            f"here (eval_members={cfg.eval_members}, eval_nonmembers={cfg.eval_nonmembers}, "
            f"shadow_train_size={cfg.shadow_train_size}). "
            f"Raise query_budget to at least {needed} or set it to null."
        )
    return attack, split


def method_settings(cfg: DictConfig) -> str:
    """The method's node as YAML, resolved, without the mappings it carries for building (``scores`` and
    ``attack_features``, the functions it may name, and ``keys``, the keys its errors name) but with the chosen
    features' own arguments (``top_k``'s ``k``): the hparams' ``method_config``."""
    node = OmegaConf.to_container(cfg.methods[cfg.method], resolve=True)
    settings = {key: value for key, value in node.items() if key not in ("scores", "attack_features", "keys")}
    settings.pop("_recursive_", None)
    arguments = {  # the chosen features' own arguments (top_k's k)
        name: {k: v for k, v in node["attack_features"][name].items() if not k.startswith("_")}
        for name in node.get("features", [])
        if name in node.get("attack_features", {})
    }
    if any(arguments.values()):
        settings["attack_features"] = {name: values for name, values in arguments.items() if values}
    return OmegaConf.to_yaml(settings)


def check_classes(cfg: DictConfig, attack: MembershipAttack) -> None:
    """:class:`ConfigError` when the method's ``top_k`` feature asks for more classes than the data has."""
    _, num_classes = data_shape(cfg.data)
    top_k = OmegaConf.select(cfg.methods[cfg.method], "attack_features.top_k.k", default=None)  # the method's own
    uses_top_k = "top_k" in getattr(attack, "features", ()) and isinstance(top_k, int)
    if num_classes is not None and uses_top_k and top_k > num_classes:
        raise ConfigError(
            f"top_k={top_k} is not allowed: the top_k feature takes the k largest of the target's probabilities, and "
            f"data={data_name(cfg.data)} has {num_classes} classes (use top_k <= {num_classes})."
        )


def shadow_recipe(cfg: DictConfig) -> DictConfig:
    """The attacker's recipe (``shadow_recipe``) with its network replaced by ``attacker_net`` when one is chosen,
    with the target's training defence in it when ``shadow_privacy`` is true (shadow models then train with the
    target's DP-SGD; proxies and attack classifiers do not), and without its ``label_smoothing`` and ``ema_decay``
    when ``shadow_regularisers`` is false."""
    attacker_net = cfg.get("attacker_net")
    privacy = cfg.get("shadow_privacy")
    regularisers = cfg.get("shadow_regularisers", True)
    require_bool(regularisers, "shadow_regularisers")
    if attacker_net is None and not privacy and regularisers:
        return cfg.shadow_recipe
    recipe = OmegaConf.create(OmegaConf.to_container(cfg.shadow_recipe, resolve=True))
    if attacker_net is not None:
        recipe.net = OmegaConf.to_container(attacker_net, resolve=True)
    if not regularisers:  # an attacker who does not know the target was trained with them
        recipe.label_smoothing, recipe.ema_decay = 0.0, None
    if privacy:
        defense = defense_from_config(cfg)
        if not isinstance(defense, TrainingDefense):
            raise ConfigError(
                "shadow_privacy=true follows the target's training defence, but there is none: add defense=dpsgd."
            )
        recipe.privacy = OmegaConf.to_container(cfg.defense, resolve=True)
    return recipe


def shadow_defense(cfg: DictConfig, attack: MembershipAttack) -> OutputDefense | None:
    """The API's output defence as the attacker applies it to its shadow and reference models' answers
    (``shadow_defense=true``; with its own randomness, from the attack's seed), or None (``false``, or
    ``defense=none``: the shadow models answer as the undefended API does)."""
    wanted = cfg.get("shadow_defense", False)
    require_bool(wanted, "shadow_defense")
    if not wanted:
        return None
    if not attack.shadow_answers:
        raise ConfigError(
            f"shadow_defense=true acts on shadow and reference models' answers, and method={cfg.method} has none: "
            "use it with a method that trains them (e.g. method=lira, rmia or shadow)."
        )
    defense = defense_from_config(cfg)
    if isinstance(defense, TrainingDefense):
        raise ConfigError(
            "shadow_defense=true follows the API's output defence, and defense=dpsgd is a training defence: for "
            "shadow models trained with it, use shadow_privacy=true."
        )
    return None if defense is None else defense.for_attacker(cfg.seed)


def _accuracy(net: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """``net``'s top-1 accuracy on images (N, C, H, W) with labels (N,)."""
    device = net_device(net)
    with torch.no_grad():
        logits = net(images.to(device))
    return float(multiclass_accuracy(logits, labels.to(device), logits.shape[1], average="micro"))


def build_context(
    cfg: DictConfig, target: Target, data: SourceData, attack: MembershipAttack, split: MembershipSplit
) -> AttackContext:
    """The attacker's view of job ``cfg``: the target behind a fresh API, the evaluation and attacker images."""
    images, labels = data.train_images, data.train_labels
    api = BlackBoxAPI(
        target.net,
        output=instantiate(cfg.api.outputs[cfg.api.output]),
        budget=cfg.query_budget,
        batch_size=cfg.api.batch_size,
        defense=defense_from_config(cfg, "api"),
    )
    return AttackContext(
        api=api,
        eval_images=images[split.eval_indices],
        eval_labels=labels[split.eval_indices],
        attacker_images=images[split.attacker],
        attacker_labels=labels[split.attacker],
        recipe=shadow_recipe(cfg),
        train_size=cfg.shadow_train_size,
        trainer=cfg.trainer,
        cache_dir=Path(cfg.paths.cache_dir),
        seed=cfg.seed,
        shadow_defense=shadow_defense(cfg, attack),
    )


def check_output(output: AttackOutput, size: int, method: str) -> None:
    """:class:`~privacy_attacks.errors.UserError` (one line naming the method) unless ``output`` holds a score (not
    NaN; ±inf ranks) and a 0/1 decision for each of the ``size`` evaluation images, as :class:`AttackOutput` says: a
    new method's mistake is named here, not in the metrics."""
    problems = []
    for name, values in (("scores", output.scores), ("predictions", output.predictions)):
        if not isinstance(values, torch.Tensor) or tuple(values.shape) != (size,):
            shape = tuple(values.shape) if isinstance(values, torch.Tensor) else type(values).__name__
            problems.append(f"{name} of shape {shape}, not ({size},)")
        elif name == "scores" and bool(torch.isnan(values).any()):
            problems.append(f"{int(torch.isnan(values).sum())} scores that are NaN")
        elif name == "predictions" and not bool(((values == 0) | (values == 1)).all()):
            problems.append("predictions other than 0 and 1")
    if problems:
        raise UserError(
            f"method={method} gave {'; '.join(problems)}: a membership method returns one score (higher: member) and "
            f"one 0/1 decision per evaluation image (AttackOutput)."
        )


def attack_alone(cfg: DictConfig, target: Target, data: SourceData) -> JobAttack:
    """One job alone: its context, split, the attack's output and the seconds it took."""
    attack, split = prepare(cfg, total=len(data.train_labels))
    context = build_context(cfg, target, data, attack, split)
    start = time.perf_counter()
    output = attack(context)
    return context, split, output, time.perf_counter() - start


def attacks_together(configs: dict[int, DictConfig], target: Target, data: SourceData) -> dict[int, JobAttack] | str:
    """The jobs of a vectorised group (:func:`~privacy_attacks.engine.sweep.run_grouped`), which may differ in their
    seed only: each job's own context and API, the proxy attack's proxies of every job distilled as one
    (:func:`~.proxy.proxy_attacks_together`); or why they cannot be."""
    shared = [
        str(OmegaConf.to_container(config, resolve=False) | {"seed": None, "paths": None})
        for config in configs.values()
    ]
    if len(set(shared)) > 1:
        return "the jobs differ in more than their seed"
    first = next(iter(configs.values()))
    prepared = {job: prepare(cfg, total=len(data.train_labels)) for job, cfg in configs.items()}
    if not isinstance(prepared[next(iter(configs))][0], ProxyAttack):
        return f"method={first.method}: only the proxy attack distils its proxies across jobs"
    contexts = {job: build_context(cfg, target, data, *prepared[job]) for job, cfg in configs.items()}
    start = time.perf_counter()
    outputs = proxy_attacks_together(
        [attack for attack, _ in prepared.values()],
        list(contexts.values()),
        int(first.trainer.get("log_every_n_steps", 50)),
    )
    if isinstance(outputs, str):
        return outputs
    share = (time.perf_counter() - start) / len(configs)
    return {job: (contexts[job], prepared[job][1], outputs[i], share) for i, job in enumerate(configs)}


def run(cfg: DictConfig, target: Target) -> dict[str, float]:
    """Run ``cfg.method`` against ``target`` and return the metrics (``mia/*``, ``target/*``, ``queries/used``).
    Under ``hydra/launcher=vectorised`` the proxy attack's jobs that differ only in their seed distil their proxies
    as one (:func:`attacks_together`)."""
    data = data_source(cfg.data).load()  # the configured dataset's training and test images
    images, labels = data.train_images, data.train_labels
    _, split = prepare(cfg, total=len(labels))  # the actual data's size, checked again
    log.info(
        "membership: method=%s on %d members + %d non-members (%s set)",
        cfg.method,
        int(split.eval_membership.sum()),
        int((split.eval_membership == 0).sum()),
        cfg.eval_set,
    )
    (context, split, output, elapsed), batched = run_grouped(
        cfg,
        lambda job: attack_alone(job, target, data),
        lambda configs: attacks_together(configs, target, data),
    )
    check_output(output, len(split.eval_membership), cfg.method)
    api = context.api
    metrics = membership_metrics(output.scores, split.eval_membership, output.predictions)
    # A heuristic ε estimate from these scores, not a certified bound (audit.py; attack=audit gives one).
    metrics.update(epsilon_heuristic(output.scores, split.eval_membership, delta=float(cfg.audit_delta)))
    # The experimenter's view of the target (not the attacker's): leakage tracks the generalisation gap.
    train_acc = _accuracy(target.net, images[split.members], labels[split.members])
    heldout = split.eval_indices[split.eval_membership == 0]
    test_images, test_labels = data.test_images, data.test_labels
    test_acc = _accuracy(target.net, test_images, test_labels)
    # The API defence's cost to an honest user, on the test images (a fresh instance: the attack's draws are untouched).
    metrics.update(api_utility(target.net, defense_from_config(cfg, "api"), test_images, test_labels))
    metrics.update(
        {
            "target/train_acc": train_acc,
            "target/test_acc": test_acc,
            "target/gap": train_acc - test_acc,
            "target/nonmember_acc": _accuracy(target.net, images[heldout], labels[heldout]),
            "queries/used": float(api.queries_used),
            "time/attack_s": elapsed,
            **output.info,
        }
    )
    out = output_dir(cfg)
    fpr, tpr = roc_curve(output.scores, split.eval_membership)
    write_roc_csv(out / "roc.csv", fpr, tpr)
    plot_roc(
        [(f"{cfg.method} (AUC {metrics['mia/auc']:.3f})", fpr, tpr)],
        out / "roc.png",
        title=f"{cfg.method}, {cfg.target.members} members",
    )
    torch.save(
        {
            "scores": output.scores,
            "membership": split.eval_membership,
            "predictions": output.predictions,
            "eval_indices": split.eval_indices,
        },
        out / "scores.pt",
    )
    finish_loggers(build_loggers(cfg), hparams(cfg), metrics)  # the metrics as scalars at step 0, with the hparams
    log.info(
        "mia/auc %.4f, tpr@0.1%%fpr %.4f, method=%s%s",
        metrics["mia/auc"],
        metrics["mia/tpr@0.1%fpr"],
        cfg.method,
        batch_note(batched, "proxies distilled"),
    )
    return metrics


def hparams(cfg: DictConfig) -> dict[str, object]:
    """The run's hparams as logged with its final metrics (TensorBoard's hparams table)."""
    return {
        "method": cfg.method,
        "target.members": cfg.target.members,
        "eval_members": cfg.eval_members,
        "eval_nonmembers": cfg.eval_nonmembers if cfg.eval_nonmembers is not None else cfg.eval_members,
        "eval_set": cfg.eval_set,
        "seed": cfg.seed,
        "shadow_train_size": cfg.shadow_train_size,
        "api.output": cfg.api.output,
        "method_config": method_settings(cfg),
    }
