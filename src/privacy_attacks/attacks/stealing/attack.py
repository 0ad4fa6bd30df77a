"""``attack=distillation``: steal the target through its black-box API, score the student.

``python attack.py -m attack=distillation loss=mse,kl query_budget=100,500,1000,5000,10000``

One job: take the first ``query_budget`` images of the seeded, shuffled query pool (``queries=``: the
configured dataset's own pool by default, or a pool of other images of the data's shape), or choose them in rounds
(``query_strategy=uncertainty|kcenter|adaptive``, :mod:`.query_strategies`), query the API (``api.output=``) once on
each, train a fresh student (``student.net``, by default the target's network, built for the data's shape and
classes) on the cached answers with ``loss=`` for a budget-dependent number of steps
(``schedule``), and score it on an evaluation set of the configured dataset that no pool holds
(``evaluation=report``: the first half of its test images, MNIST's 0-4,999, where numbers are reported;
``evaluation=tune``: its validation split, where settings are chosen): accuracy, agreement with the target,
KL(target || student); an ensemble's (``student.members``) members also alone. The query draw, the student's
initial weights and its batch order and shifts come from seeds derived from ``seed``
(:mod:`privacy_attacks.seeding`). Writes ``student.pt``, TensorBoard scalars and hparams; returns the metrics that
``run_attack`` writes to ``metrics.json``.
"""

from __future__ import annotations

import logging
import time

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from privacy_attacks.batched import in_batches, net_device
from privacy_attacks.blackbox import BlackBoxAPI, OutputMode
from privacy_attacks.data.identity import data_name, data_shape, data_source
from privacy_attacks.defenses import api_utility, defense_from_config
from privacy_attacks.engine.sweep import batch_note, replay, run_grouped
from privacy_attacks.errors import ConfigError, UserError, require_choice, require_int, require_positive
from privacy_attacks.harness import build_loggers, build_node, finish_loggers, run_device
from privacy_attacks.io import output_dir
from privacy_attacks.seeding import derive_seed, seeded
from privacy_attacks.targets import Target
from privacy_attacks.training import check_network

from .data_free import GENERATOR_QUERIES, check_data_free, steal_data_free
from .distillation import StudentEnsemble, fidelity_metrics, fit_student, steps_for_budget
from .losses import DistillationLoss
from .pools import EVALUATION_SETS, NoisePool, QueryPool, data_pool, dataset_evaluation_split, shared_images
from .query_strategies import QueryStrategy, round_sizes
from .semi_supervised import FixMatch
from .stacked import fit_students, students_refusal

log = logging.getLogger(__name__)


# The value of `loss` (conf/attack/distillation.yaml's default) that queries=generator, which does not use it, takes.
DATA_FREE_UNUSED_LOSS = "kl"


def validate(cfg: DictConfig) -> None:
    """Stop before any work on a bad loss, output mode, pool, budget, temperature or schedule."""
    require_choice(cfg.loss, cfg.losses, "loss")
    require_choice(cfg.api.output, cfg.api.outputs, "api.output")
    require_choice(cfg.queries, pool_names(cfg), "queries")
    require_choice(cfg.evaluation, EVALUATION_SETS, "evaluation")
    require_positive(cfg.temperature, "temperature")
    budget = cfg.query_budget
    require_int(budget, "query_budget")
    require_int(cfg.student.batch_size, "student.batch_size")
    require_int(cfg.student.shift, "student.shift", minimum=0)
    require_int(cfg.student.members, "student.members")
    if cfg.student.get("shift_max_budget") is not None:
        require_positive(cfg.student.shift_max_budget, "student.shift_max_budget", allow_zero=True)
    require_positive(cfg.schedule.per_sqrt_query, "schedule.per_sqrt_query")
    for key in ("min_steps", "max_steps"):
        require_int(cfg.schedule[key], f"schedule.{key}")
    require_int(cfg.schedule.get("steps"), "schedule.steps", null_means="from the budget")
    build_node(cfg.losses[cfg.loss], f"losses.{cfg.loss}", DistillationLoss, "a distillation loss")  # checks itself
    instantiate(cfg.api.outputs[cfg.api.output])  # e.g. api.decimals
    require_choice(cfg.query_strategy, cfg.query_strategies, "query_strategy")
    # The student takes the data's images and gives its classes; messages name the key that chose its network.
    net_key = "attacker_net" if cfg.get("attacker_net") is not None else None
    check_network(cfg.student, "student", cfg.data, net_key=net_key)
    if cfg.queries == GENERATOR_QUERIES:
        if is_active(cfg):
            raise ConfigError(
                f"query_strategy={cfg.query_strategy} chooses among pool images; queries=generator has no pool: leave "
                "query_strategy=random."
            )
        check_data_free(cfg.data_free, budget, cfg.api.output, defense_from_config(cfg, "api"))
        if cfg.api.output == "rounded" and cfg.api.decimals == 0:
            raise ConfigError(
                "queries=generator needs answers with scores: api.output=rounded with api.decimals=0 answers each "
                "probability as 0 or 1, a label at most; raise api.decimals."
            )
        if cfg.loss != DATA_FREE_UNUSED_LOSS:  # a sweep over it would run the same job again and again
            raise ConfigError(
                f"loss={cfg.loss} is not used with queries=generator: the data-free game trains its student with "
                f"data_free.student_loss (l1 or kl); leave loss at its default, {DATA_FREE_UNUSED_LOSS}."
            )
        if int(cfg.student.members) != 1:
            raise ConfigError(
                "student.members must be 1 with queries=generator: the data-free game trains one student."
            )
        if consistency(cfg).active:
            raise ConfigError(
                "student.unlabelled.images must be 0 with queries=generator: the data-free attacker holds no images."
            )
        return
    pool = query_pool(cfg)
    pool.check_budget(budget)
    held = consistency(cfg)  # FixMatch checks its own settings
    if held.active and queried_prefix(cfg) + held.images > pool.size:
        raise ConfigError(
            f"student.unlabelled.images={held.images} is not allowed: the {pool.name} pool holds {pool.size} images, "
            f"{queried_prefix(cfg)} of them for the queries; lower student.unlabelled.images to at most "
            f"{pool.size - queried_prefix(cfg)}."
        )
    if is_active(cfg):
        require_int(cfg.active.rounds, "active.rounds")
        require_int(cfg.active.candidates, "active.candidates")
        make_strategy(cfg)  # refuses its own bad settings
        if not budget <= cfg.active.candidates <= pool.size:
            raise ConfigError(
                f"active.candidates={cfg.active.candidates} is not allowed: query_strategy={cfg.query_strategy} picks "
                f"its {budget} queries among that many pool images, so it must be between query_budget={budget} and "
                f"the {pool.name} pool's {pool.size} images."
            )
    if hasattr(pool, "ensure_available"):
        pool.ensure_available()
    image_shape, _ = data_shape(cfg.data)
    pool.check_shape(image_shape or data_pool(cfg.data).image_shape, data_name(cfg.data))
    if cfg.queries != data_name(cfg.data) and not isinstance(pool, NoisePool):
        check_pool_holds_no_evaluation_image(cfg, pool)


def check_pool_holds_no_evaluation_image(cfg: DictConfig, pool: QueryPool) -> None:
    """:class:`ConfigError` when a pool of other data holds images the student is scored on (``queries=mnist`` with
    ``data=mnist_classes``: the same files under another split); the dataset's own pool leaves them out by design."""
    eval_images, _ = dataset_evaluation_split(
        data_source(cfg.data).load(), cfg.evaluation, cfg.data.val_size, cfg.data.split_seed
    )
    shared = shared_images(pool.load(), eval_images)
    if shared:
        name = data_name(cfg.data)
        raise ConfigError(
            f"queries={cfg.queries} is not allowed with data={name}: its pool holds {shared} of the "
            f"{len(eval_images)} images the student is scored on (evaluation={cfg.evaluation}), so it could be "
            f"queried or trained on them; use queries={name}, the dataset's own pool, which leaves them out."
        )


def pool_names(cfg: DictConfig) -> list[str]:
    """The choices of ``queries``: the pools under ``pools``, the configured dataset's name (its own pool) and
    ``generator`` (data-free: :mod:`.data_free`)."""
    name = data_name(cfg.data)
    return [*cfg.pools, *([] if name in cfg.pools else [name]), GENERATOR_QUERIES]


def query_pool(cfg: DictConfig) -> QueryPool:
    """The pool of ``queries``: the configured dataset's own (:func:`~.pools.data_pool`) when it names the dataset
    (``queries=mnist`` with ``data=mnist``, the default), else the node of that name under ``pools`` (images of
    other data: out of distribution for the target)."""
    if cfg.queries == data_name(cfg.data):
        return data_pool(cfg.data)
    return instantiate(cfg.pools[cfg.queries])


def schedule_steps(cfg: DictConfig, queries: int | None = None) -> int:
    """``schedule.steps`` if set, else :func:`steps_for_budget` of ``queries`` (default: the budget; enough steps for
    small ones)."""
    if cfg.schedule.get("steps") is not None:
        return int(cfg.schedule.steps)
    s = cfg.schedule
    return steps_for_budget(queries or cfg.query_budget, s.per_sqrt_query, s.min_steps, s.max_steps)


def student_shift(cfg: DictConfig, queries: int | None = None) -> int:
    """Local random-shift augmentation (pixels): ``student.shift`` up to ``student.shift_max_budget`` queries, else 0.

    Reusing a cached answer for a shifted image regularises a student with few queries; with many it gains
    nothing. On the tuning set (``experiment=stealing_tuning_shifts``, kl, 3 seeds) shifts raise agreement from
    0.880 to 0.926 at 100 queries and from 0.974 to 0.983 at 1,000, and leave it at 0.991 at 10,000
    (docs/stealing.md).
    """
    limit = cfg.student.get("shift_max_budget")
    return int(cfg.student.shift) if limit is None or (queries or cfg.query_budget) <= limit else 0


def train_student(
    cfg: DictConfig, mode: OutputMode, images: Tensor, answers: Tensor, role: tuple, **options
) -> nn.Module:
    """A fresh student (``student.net``, initial weights from the attack's seed and ``role``) trained on the answers
    bought for ``images``, read in the API's output ``mode``, with the budget's schedule for that many queries;
    ``options`` go to :func:`fit_student`."""
    with seeded(cfg.seed, *role):
        net = instantiate(cfg.student.net)
    return fit_student(
        net,
        images,
        answers,
        mode,
        instantiate(cfg.losses[cfg.loss]),
        schedule_steps(cfg, len(images)),
        cfg.trainer,
        optimizer=instantiate(cfg.student.optimizer),
        scheduler=instantiate(cfg.student.scheduler),
        batch_size=cfg.student.batch_size,
        shift=student_shift(cfg, len(images)),
        seed=derive_seed(cfg.seed, *role, "fit"),
        **options,
    )


def student_probabilities(student: nn.Module, images: Tensor, batch_size: int = 2048) -> Tensor:
    """The student's softmax (M, C) on ``images`` (M, C_in, H, W), on the CPU."""
    return in_batches(
        lambda chunk: student(chunk).softmax(1), images, batch_size=batch_size, device=net_device(student)
    )


def buy_answers(cfg: DictConfig, pool: QueryPool, api: BlackBoxAPI) -> tuple[Tensor, Tensor]:
    """The images the attacker queries and the API's answers, (B, C, H, W) and (B, ...), B = ``query_budget``.

    ``query_strategy=random``: the first B images of the seeded, shuffled pool. An active strategy
    (:mod:`.query_strategies`): the first ``active.candidates`` images of that shuffle are the candidates; the first
    round queries the first of them, each later round the ones its strategy picks from the probabilities of a student
    trained on the answers so far.
    """
    seed = derive_seed(cfg.seed, "queries")
    if not is_active(cfg):
        images = pool.take(cfg.query_budget, seed=seed)
        return images, api.query(images)
    strategy = make_strategy(cfg)
    candidates = pool.take(int(cfg.active.candidates), seed=seed)
    strategy.prepare(candidates, api.output, derive_seed(cfg.seed, "queries", cfg.query_strategy))
    sizes = round_sizes(int(cfg.query_budget), int(cfg.active.rounds))
    if len(sizes) < int(cfg.active.rounds):
        log.warning(
            "active.rounds=%d is more than query_budget=%d: %d rounds of one query each.",
            cfg.active.rounds,
            cfg.query_budget,
            len(sizes),
        )
    queried = torch.zeros(len(candidates), dtype=torch.bool)
    order = torch.arange(sizes[0])
    queried[order] = True
    answers = [api.query(candidates[order])]
    strategy.observe(order, answers[0])
    for round_index, size in enumerate(sizes[1:], start=1):
        student = train_student(
            cfg,
            api.output,
            candidates[order],
            torch.cat(answers),
            ("student", "round", round_index),
            name=f"student for query round {round_index + 1}/{len(sizes)}",
        )
        probs = student_probabilities(student, candidates)
        chosen, bought = strategy.buy(probs, queried, size, lambda indices: api.query(candidates[indices]))
        queried[chosen] = True
        order = torch.cat([order, chosen])
        answers.append(bought)
        log.info("query round %d/%d: %d queries chosen by %s", round_index + 1, len(sizes), size, cfg.query_strategy)
    return candidates[order], torch.cat(answers)


def is_active(cfg: DictConfig) -> bool:
    """Whether ``query_strategy`` buys the budget in rounds (its node under ``query_strategies`` is not null)."""
    return cfg.query_strategies[cfg.query_strategy] is not None


def make_strategy(cfg: DictConfig) -> QueryStrategy:
    """The active strategy ``query_strategy`` names, built from its node under ``query_strategies``."""
    key = f"query_strategies.{cfg.query_strategy}"
    return build_node(cfg.query_strategies[cfg.query_strategy], key, QueryStrategy, "a query strategy")


def steal_without_data(cfg: DictConfig, api: BlackBoxAPI, loggers: list) -> nn.Module:
    """``queries=generator``: a fresh student trained by the data-free game (:mod:`.data_free`) within the budget."""
    with seeded(cfg.seed, "student"):
        net = instantiate(cfg.student.net)
    image_shape = data_shape(cfg.data)[0] or data_pool(cfg.data).image_shape
    seed = derive_seed(cfg.seed, "data_free")
    return steal_data_free(net, api, tuple(image_shape), cfg.data_free, cfg.query_budget, cfg.trainer, seed, loggers)


def build_api(cfg: DictConfig, target: Target) -> BlackBoxAPI:
    """The job's black-box API to ``target``: its output, query budget and API defence."""
    output = instantiate(cfg.api.outputs[cfg.api.output])
    defense = defense_from_config(cfg, "api")
    return BlackBoxAPI(target.net, output, cfg.query_budget, cfg.api.batch_size, defense=defense)


def consistency(cfg: DictConfig) -> FixMatch:
    """The student's unlabelled loss (``student.unlabelled``; off at ``images: 0``); a bad setting raises its own
    :class:`~privacy_attacks.errors.ConfigError`."""
    try:
        return instantiate(cfg.student.unlabelled)
    except InstantiationException as error:
        if isinstance(error.__cause__, UserError):
            raise error.__cause__ from None
        raise


def queried_prefix(cfg: DictConfig) -> int:
    """How many images of the pool's seeded shuffle the queries come from: the budget at random, the candidates of
    an active strategy."""
    return int(cfg.active.candidates) if is_active(cfg) else int(cfg.query_budget)


def unlabelled_images(cfg: DictConfig, pool: QueryPool) -> Tensor | None:
    """The images the student learns from without querying them: ``student.unlabelled.images`` of the pool's seeded
    shuffle right after the :func:`queried_prefix` (None when off)."""
    held = consistency(cfg)
    if not held.active:
        return None
    start = queried_prefix(cfg)
    return pool.take(start + held.images, seed=derive_seed(cfg.seed, "queries"))[start:]


def steal_from_pool(cfg: DictConfig, target: Target, loggers: list) -> tuple[BlackBoxAPI, nn.Module, float, dict]:
    """One job alone: its API, the student trained on the answers it bought (and on unlabelled pool images when
    ``student.unlabelled`` holds some; an ensemble of ``student.members`` networks above 1), the seconds, and the
    history to replay into the loggers (the first member's, when the members were fitted as one; else none: the
    student logged its own)."""
    api = build_api(cfg, target)
    start = time.perf_counter()
    pool = query_pool(cfg)
    images, answers = buy_answers(cfg, pool, api)
    extra = {"unlabelled": unlabelled_images(cfg, pool), "consistency": consistency(cfg)}
    members = int(cfg.student.members)
    if members > 1:
        together = (
            "they learn from unlabelled images (student.unlabelled)"
            if extra["unlabelled"] is not None
            else train_members_together(cfg, api.output, images, answers)
        )
        if isinstance(together, tuple):
            ensemble, history = together
            return api, ensemble, time.perf_counter() - start, history
        log.info("The %d members of the student are trained one by one (%s).", members, together)
    students = [
        train_student(
            cfg,
            api.output,
            images,
            answers,
            member_role(member),
            logger=(loggers or False) if member == 0 else False,  # one member's curve per run
            name="student" if members == 1 else f"student {member + 1}/{members}",
            **extra,
        )
        for member in range(members)
    ]
    student = students[0] if members == 1 else StudentEnsemble(students)
    return api, student, time.perf_counter() - start, {}


def train_members_together(
    cfg: DictConfig, mode: OutputMode, images: Tensor, answers: Tensor
) -> tuple[StudentEnsemble, dict] | str:
    """The ensemble's ``student.members`` networks trained as one vectorised model (:func:`~.stacked.fit_students`:
    each its own initial weights, batch order and shifts, as :func:`train_student` gives it alone) and the first
    member's ``{step: {"train/loss": value}}``; or why they cannot be (batch norm, dropout: a sentence)."""
    nets = []
    for member in range(int(cfg.student.members)):
        with seeded(cfg.seed, *member_role(member)):
            nets.append(instantiate(cfg.student.net))
    data = [(images, answers)] * len(nets)
    reason = students_refusal(nets, data, int(cfg.student.batch_size))
    if reason is not None:
        return reason
    students, history = fit_with_schedule(
        cfg,
        nets,
        data,
        [instantiate(cfg.losses[cfg.loss])] * len(nets),
        [mode] * len(nets),
        [student_shift(cfg, len(images))] * len(nets),
        [derive_seed(cfg.seed, *member_role(member), "fit") for member in range(len(nets))],
    )
    return StudentEnsemble(students), history[0]


def fit_with_schedule(
    cfg: DictConfig,
    nets: list[nn.Module],
    data: list[tuple[Tensor, Tensor]],
    losses: list,
    modes: list[OutputMode],
    shifts: list[int],
    seeds: list[int],
) -> tuple[list[nn.Module], list[dict]]:
    """:func:`~.stacked.fit_students` with ``cfg``'s schedule for the first query set's size, its optimiser, schedule,
    batch size, device and logging interval (shared by every student)."""
    return fit_students(
        nets,
        data,
        losses,
        modes,
        schedule_steps(cfg, len(data[0][0])),
        instantiate(cfg.student.optimizer),
        instantiate(cfg.student.scheduler),
        int(cfg.student.batch_size),
        shifts,
        seeds,
        run_device(cfg.trainer),
        int(cfg.trainer.get("log_every_n_steps", 50)),
    )


def member_role(member: int) -> tuple:
    """The seeding role of the final student's ``member``-th network: the first is the lone student's, so
    ``student.members=1`` trains exactly the student it always did; the others draw their own initial weights and
    batch orders."""
    return ("student",) if member == 0 else ("student", "member", member)


def student_net_config(cfg: DictConfig) -> dict:
    """The saved student's network config (``student.pt``'s ``net``): ``student.net``, or a
    :class:`~.distillation.StudentEnsemble` of ``student.members`` of them."""
    net = OmegaConf.to_container(cfg.student.net, resolve=True)
    if int(cfg.student.members) == 1:
        return net
    return {"_target_": f"{StudentEnsemble.__module__}.StudentEnsemble", "members": [net] * int(cfg.student.members)}


# What every job of a vectorised group must share (the rest, seed, loss and temperature, may differ).
SHARED_KEYS = ("student", "query_budget", "queries", "query_strategy", "api", "schedule", "trainer", "data")


def steal_from_pool_together(configs: dict[int, DictConfig], target: Target) -> dict[int, tuple] | str:
    """The jobs of a vectorised group (:func:`~privacy_attacks.engine.sweep.run_grouped`): each job's own API and
    answers, their students trained as one (:func:`~.stacked.fit_students`); or why they cannot be."""
    first = next(iter(configs.values()))
    if consistency(first).active:
        return "the students learn from unlabelled images (student.unlabelled)"
    if int(first.student.members) > 1:
        return "each job's student is an ensemble (student.members)"
    for key in SHARED_KEYS:
        values = {
            str(OmegaConf.to_container(c[key], resolve=True)) if OmegaConf.is_config(c[key]) else str(c[key])
            for c in configs.values()
        }
        if len(values) > 1:
            return f"the jobs differ in {key}"
    nets = {}
    for job, cfg in configs.items():
        with seeded(cfg.seed, "student"):
            nets[job] = instantiate(cfg.student.net)
    start = time.perf_counter()
    apis = {job: build_api(cfg, target) for job, cfg in configs.items()}
    bought = {job: buy_answers(cfg, query_pool(cfg), apis[job]) for job, cfg in configs.items()}
    reason = students_refusal(list(nets.values()), list(bought.values()), int(first.student.batch_size))
    if reason is not None:
        return reason
    queries = len(next(iter(bought.values()))[0])
    students, history = fit_with_schedule(
        first,
        list(nets.values()),
        list(bought.values()),
        [instantiate(cfg.losses[cfg.loss]) for cfg in configs.values()],
        [apis[job].output for job in configs],
        [student_shift(cfg, queries) for cfg in configs.values()],
        [derive_seed(cfg.seed, "student", "fit") for cfg in configs.values()],
    )
    share = (time.perf_counter() - start) / len(configs)
    return {job: (apis[job], students[i], share, history[i]) for i, job in enumerate(configs)}


def member_metrics(student: nn.Module, target: nn.Module, images: Tensor, labels: Tensor) -> dict[str, float]:
    """An ensemble's members scored alone (none for a single student): ``student/member_agreement`` and
    ``student/member_acc``, their means, and ``student/first_member_agreement``, the first member's (the student
    ``student.members=1`` trains), so one run shows what the ensemble adds over its networks."""
    if not isinstance(student, StudentEnsemble):
        return {}
    scores = [fidelity_metrics(member, target, images, labels) for member in student.members]
    log.info(
        "the ensemble's members alone: student/agreement %s",
        ", ".join(f"{score['student/agreement']:.4f}" for score in scores),
    )
    return {
        "student/member_agreement": sum(score["student/agreement"] for score in scores) / len(scores),
        "student/member_acc": sum(score["student/acc"] for score in scores) / len(scores),
        "student/first_member_agreement": scores[0]["student/agreement"],
    }


def run(cfg: DictConfig, target: Target) -> dict[str, float]:
    """Run one distillation job against ``target``; return its metrics (see the module docstring)."""
    out = output_dir(cfg)
    data_free = cfg.queries == GENERATOR_QUERIES
    steps = check_data_free(cfg.data_free, cfg.query_budget, cfg.api.output) if data_free else schedule_steps(cfg)
    loggers = build_loggers(cfg)
    loss = f"data_free.student_loss={cfg.data_free.student_loss}" if data_free else f"loss={cfg.loss}"
    log.info(
        "Distilling %s with %s from %d %s queries (%s), %d %s.",
        cfg.student.net._target_,
        loss,
        cfg.query_budget,
        cfg.queries,
        cfg.api.output,
        steps,
        "iterations of the data-free game" if data_free else "steps",
    )
    batched = 1
    if data_free:
        api = build_api(cfg, target)
        start = time.perf_counter()
        student = steal_without_data(cfg, api, loggers)
        fit_time = time.perf_counter() - start
    else:  # alone, or with the other jobs of its group under hydra/launcher=vectorised
        (api, student, fit_time, history), batched = run_grouped(
            cfg,
            lambda job: steal_from_pool(job, target, loggers),
            lambda configs: steal_from_pool_together(configs, target),
        )
        replay(loggers, history)
    eval_images, eval_labels = dataset_evaluation_split(
        data_source(cfg.data).load(), cfg.evaluation, cfg.data.val_size, cfg.data.split_seed
    )
    metrics = fidelity_metrics(student, target.net, eval_images, eval_labels)
    metrics.update(member_metrics(student, target.net, eval_images, eval_labels))
    # The defence's cost to an honest user, on the same images (a fresh instance: the attack's draws are untouched).
    metrics.update(api_utility(target.net, defense_from_config(cfg, "api"), eval_images, eval_labels))
    metrics.update(
        {"queries/used": api.queries_used, "queries/budget": cfg.query_budget, "steps": steps, "fit_time_s": fit_time}
    )
    state = {k: v.detach().cpu() for k, v in student.state_dict().items()}
    torch.save(
        {"state_dict": state, "net": student_net_config(cfg), "metrics": metrics},
        out / "student.pt",
    )
    params = {
        "loss": cfg.loss,
        "query_budget": cfg.query_budget,
        "temperature": cfg.temperature,
        "queries": cfg.queries,
        "api.output": cfg.api.output,
        "evaluation": cfg.evaluation,
        "student.batch_size": cfg.student.batch_size,
        "shift": student_shift(cfg),
        "query_strategy": cfg.query_strategy,
        "unlabelled_images": int(cfg.student.unlabelled.images),
        "student_members": int(cfg.student.members),
        "seed": cfg.seed,
    }
    finish_loggers(loggers, params, {k: float(v) for k, v in metrics.items()}, step=steps)
    log.info(
        "student/acc %.4f, student/agreement %.4f, queries/used %d%s",
        metrics["student/acc"],
        metrics["student/agreement"],
        metrics["queries/used"],
        batch_note(batched, "trained"),
    )
    return metrics
