"""Several students distilled at once: the jobs of a distillation sweep that differ only in ``seed``, ``loss`` or
``temperature`` (``hydra/launcher=vectorised``), trained as one vectorised model (``torch.func.vmap`` over stacked
weights, as the shadow models are: :mod:`privacy_attacks.attacks.membership.shadow_models`).

Each student keeps what :func:`~.distillation.fit_student` gives it alone: its own initial weights, answers, batch
order (:class:`~.distillation.ResampledBatches` from its seed), random shifts (from its seed's ``shifts`` draw, as
``fit_student`` seeds them), loss and output mode. They share the architecture, the number of steps, the batch size and
the optimiser with its schedule; Adam and the cosine schedule act element by element, so the stacked optimisation is
that of S separate ones (up to the order of floating-point sums in the batched network).

    students = fit_students([net_a, net_b], [(images_a, answers_a), (images_b, answers_b)], [kl, mse], ["probs"] * 2,
                            steps=1500, optimizer=partial(torch.optim.Adam, lr=5e-3), scheduler=cosine,
                            batch_size=128, shifts=[1, 1], seeds=[11, 12])
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state

from privacy_attacks.batched import vmap_refusal
from privacy_attacks.blackbox import OutputMode, output_mode
from privacy_attacks.callbacks.epoch_log import ProgressLog
from privacy_attacks.harness import lightning_writes
from privacy_attacks.models.layers import load_stacked
from privacy_attacks.seeding import generator

from .distillation import ResampledBatches, random_shift
from .losses import DistillationLoss, scalar_loss


def students_refusal(nets: Sequence[nn.Module], data: Sequence[tuple[Tensor, Tensor]], batch_size: int) -> str | None:
    """Why these students cannot be trained as one (a sentence), or None when they can: one architecture (the same
    parameter and buffer names and shapes), no batch norm (its running statistics are updated in place, which a
    vectorised model cannot do), no dropout, one batch size (each job's ``min(batch_size, its images)``), and a
    forward that :func:`torch.vmap` can run (:func:`~privacy_attacks.batched.vmap_refusal`)."""
    if len(nets) < 2:
        return "a single student"
    shapes = [[(k, tuple(v.shape)) for k, v in net.state_dict().items()] for net in nets]
    if any(shape != shapes[0] for shape in shapes):
        return "the students differ in architecture"
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in nets[0].modules()):
        return "the student has batch norm"
    if any(isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0 for m in nets[0].modules()):
        return "the student has dropout (a vectorised model draws no random masks)"
    if len({min(batch_size, len(images)) for images, _ in data}) > 1:
        return "the students' query sets give different batch sizes"
    return vmap_refusal(nets[0], data[0][0])


def fit_students(
    nets: Sequence[nn.Module],
    data: Sequence[tuple[Tensor, Tensor]],
    losses: Sequence[DistillationLoss],
    modes: Sequence[OutputMode | str],
    steps: int,
    optimizer: Callable[..., torch.optim.Optimizer],
    scheduler: Callable[..., Any] | None,
    batch_size: int,
    shifts: Sequence[int],
    seeds: Sequence[int],
    device: torch.device | str = "cpu",
    log_every: int = 50,
) -> tuple[list[nn.Module], list[dict[int, dict[str, float]]]]:
    """Train S students as one: student s from ``nets[s]``'s weights on ``data[s]`` = (images (N_s, C, H, W), answers),
    with ``losses[s]`` reading answers in ``modes[s]``, ``shifts[s]`` pixels of random shift and ``seeds[s]`` (the
    ``seed`` :func:`~.distillation.fit_student` would get). Returns the students (their weights replaced, in eval mode,
    on the CPU) and each one's ``{step: {"train/loss": value}}`` every ``log_every`` steps."""
    reason = students_refusal(nets, data, batch_size)
    if reason is not None:
        raise ValueError(f"These students cannot be trained as one: {reason}.")
    device = torch.device(device)
    template = copy.deepcopy(nets[0]).to("meta").train()
    params, buffers = stack_module_state([net.to(device) for net in nets])
    params = {name: value.detach().clone().requires_grad_(True) for name, value in params.items()}
    forward = torch.vmap(lambda p, b, x: functional_call(template, (p, b), (x,)))
    opt = optimizer(params=list(params.values()))
    schedule = scheduler(optimizer=opt, T_max=max(1, steps)) if scheduler is not None else None
    batches = [
        iter(ResampledBatches(images.to(device), answers.to(device), batch_size, steps, seed))
        for (images, answers), seed in zip(data, seeds)
    ]
    draws = [generator(seed, "shifts") for seed in seeds]  # fit_student's shifts: its seed's "shifts" draw
    modes = [output_mode(mode) for mode in modes]
    history: list[dict[int, dict[str, float]]] = [{} for _ in nets]
    progress = ProgressLog(f"{len(nets)} students", steps, unit="step")
    for step in range(steps):
        pairs = [next(batch) for batch in batches]
        inputs = torch.stack([random_shift(x, shift, draw) for (x, _), shift, draw in zip(pairs, shifts, draws)])
        logits = forward(params, buffers, inputs)  # (S, B, K)
        parts = [
            scalar_loss(loss(logits[s], pairs[s][1], mode), loss) for s, (loss, mode) in enumerate(zip(losses, modes))
        ]
        opt.zero_grad()
        torch.stack(parts).sum().backward()
        opt.step()
        if schedule is not None:
            schedule.step()
        if lightning_writes(step, log_every):  # the steps a student fitted alone writes (fit_student)
            for s, part in enumerate(parts):
                history[s][step] = {"train/loss": float(part.detach())}
        if progress.due(step + 1):  # reads the loss (a device sync) only when a line is written
            progress.step(step + 1, {"train/loss": float(torch.stack(parts).detach().mean())})
    students = []
    for s, net in enumerate(nets):
        students.append(load_stacked(net, {**params, **buffers}, s).cpu().eval())
    return students, history
