"""Data-free model stealing: queries synthesised by a generator, no pool of images (``queries=generator``).

DFME (Truong, Maini, Walls & Papernot 2021, "Data-free model extraction", CVPR), with MAZE's experience replay
(Kariyappa, Prakash & Qureshi 2021, "MAZE: data-free model stealing attack using zeroth-order gradient estimation").
A generator G maps Gaussian codes z to images; the student S and G play a game through the black-box API T:

- **generator step**: G seeks images where S disagrees with T, maximising L(x) = ||S(x) - T(x)||_1 at x = G(z) on
  logits (T's answers read as centred log-probabilities, DFME's logit recovery). T gives no gradient, so dL/dx is
  estimated by forward differences along ``directions`` random unit vectors u (dimension D):
  g = D / m sum_j (L(x + eps u_j) - L(x)) / eps u_j, and back-propagated through G;
  it costs B x (1 + m) queries for a batch of B codes;
- **student steps**: S imitates T's answers on fresh G(z) (B queries each) under the same L1 loss (or KL:
  ``student_loss``), and on a batch replayed from every answer bought so far (MAZE's experience replay: no query).

Every image sent to T counts against ``query_budget``: one iteration costs
``generator_steps`` x B x (1 + ``directions``) + ``student_steps`` x B queries, and the attack runs
``query_budget`` // that many iterations. The answers must carry scores (``api.output``: probs, logits, rounded);
labels alone give no disagreement to climb.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

from privacy_attacks.blackbox import BlackBoxAPI
from privacy_attacks.callbacks.epoch_log import StepLog
from privacy_attacks.errors import ConfigError, require_choice, require_int, require_positive
from privacy_attacks.harness import build_trainer, writes_this_step

# The value of ``queries`` that selects the data-free attack.
GENERATOR_QUERIES = "generator"


class Generator(nn.Module):
    """DFME's generator, sized for ``image_shape``: z (N, latent_dim) -> images (N, C, H, W) in [0, 1].

    A linear layer to ``width`` maps of (H / 4, W / 4), two upsampling 3 x 3 convolutions with batch norm and leaky
    ReLU, a 3 x 3 convolution to C channels and a sigmoid (DFME ends in tanh for normalised images; the API takes
    [0, 1] pixels).
    """

    def __init__(self, image_shape: tuple[int, int, int], latent_dim: int = 128, width: int = 128):
        super().__init__()
        channels, height, width_px = image_shape
        self.start = (math.ceil(height / 4), math.ceil(width_px / 4))
        self.image_shape, self.latent_dim, self.width = tuple(image_shape), latent_dim, width
        self.project = nn.Linear(latent_dim, width * self.start[0] * self.start[1])
        self.body = nn.Sequential(
            nn.BatchNorm2d(width),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(width, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.LeakyReLU(0.2),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(width, width // 2, 3, padding=1, bias=False),
            nn.BatchNorm2d(width // 2),
            nn.LeakyReLU(0.2),
            nn.Conv2d(width // 2, channels, 3, padding=1),
        )

    def forward(self, z: Tensor) -> Tensor:
        maps = self.project(z).view(len(z), self.width, *self.start)
        images = torch.sigmoid(self.body(maps))
        return images[..., : self.image_shape[1], : self.image_shape[2]]


def centred_log_probs(scores: Tensor) -> Tensor:
    """(N, C) logit-form scores with each row's mean removed: DFME's estimate of the target's logits up to the
    softmax's free shift, so that an L1 distance between two models' logits is defined."""
    log_probs = scores.float().log_softmax(dim=-1)
    return log_probs - log_probs.mean(dim=-1, keepdim=True)


def disagreement(student_logits: Tensor, target_logits: Tensor) -> Tensor:
    """(N,) DFME's L1 distance between centred logits (N, C), per image, averaged over classes."""
    student = student_logits - student_logits.mean(dim=-1, keepdim=True)
    return (student - target_logits).abs().mean(dim=-1)


def forward_difference_gradient(
    loss: Callable[[Tensor], Tensor], x: Tensor, directions: int, epsilon: float, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Zeroth-order estimate of each image's gradient of a per-image ``loss`` (M, ...) -> (M,) at ``x`` (N, C, H, W):
    D / m sum_j (loss(x + eps u_j) - loss(x)) / eps u_j over m = ``directions`` random unit directions u_j per image
    (D = C H W; DFME's estimator). ``loss`` is called once on the N (1 + m) points. Returns the estimate (N, C, H, W)
    and loss(x) (N,)."""
    n, m, dimension = len(x), directions, x[0].numel()
    unit = [1] * (x.dim() - 1)
    probes = torch.randn((m, *x.shape), generator=generator).to(x.device)
    probes = probes / probes.flatten(2).norm(dim=2).view(m, n, *unit)
    losses = loss(torch.cat([x, (x.unsqueeze(0) + epsilon * probes).flatten(0, 1)]))
    base, moved = losses[:n], losses[n:].view(m, n)
    slopes = (moved - base) / epsilon  # (m, N)
    return dimension / m * (slopes.view(m, n, *unit) * probes).sum(dim=0), base


def kl_divergence(student_logits: Tensor, target_logits: Tensor) -> Tensor:
    """(N,) KL(target || student) of the softmaxes of logits (N, C): a student loss that, unlike the L1 distance,
    weighs each class by the target's probability of it."""
    target = target_logits.log_softmax(dim=-1)
    return (target.exp() * (target - student_logits.log_softmax(dim=-1))).sum(dim=-1)


# The student's losses against the target's answers (``data_free.student_loss``); the generator climbs the L1 one.
STUDENT_LOSSES = {"l1": disagreement, "kl": kl_divergence}


class LatentBatches:
    """``iterations`` seeded batches of Gaussian codes (B, latent_dim): the game's data loader."""

    def __init__(self, iterations: int, batch_size: int, latent_dim: int, seed: int):
        self.iterations, self.batch_size, self.latent_dim, self.seed = iterations, batch_size, latent_dim, seed

    def __len__(self) -> int:
        return self.iterations

    def __iter__(self) -> Iterator[Tensor]:
        generator = torch.Generator().manual_seed(self.seed)
        for _ in range(self.iterations):
            yield torch.randn(self.batch_size, self.latent_dim, generator=generator)


class DataFreeStealing(L.LightningModule):
    """The DFME game (the module docstring) as one Lightning system with manual optimisation.

    Each training batch is one iteration's codes (B, latent_dim); the generator's and the student's later codes and
    the probe directions come from ``seed``.

    Args:
        student: the attacker's network, images (N, C, H, W) -> logits (N, classes).
        generator: a :class:`Generator` for the data's shape.
        api: the target's black-box API; every query counts.
        student_lr, generator_lr: Adam learning rates, both cosine-annealed over the iterations.
        student_steps, generator_steps: steps per iteration.
        directions: forward-difference directions m per generated image.
        epsilon: the forward-difference step, in pixel units.
        replay: student steps also train on a batch replayed from every answer bought (MAZE).
        replay_size: the most answers kept for replay (the oldest leave first).
        replay_steps: further student steps per iteration on replayed answers alone (no query).
        student_loss: the student's loss, a name of :data:`STUDENT_LOSSES` (``l1``: DFME's; ``kl``).
        iterations: the game's length, over which both learning rates are annealed.
        seed: the attacker's draws of codes and directions.

    Logs ``train/student_loss``, ``train/generator_disagreement``.
    """

    def __init__(
        self,
        student: nn.Module,
        generator: Generator,
        api: BlackBoxAPI,
        student_lr: float = 1e-3,
        generator_lr: float = 5e-4,
        student_steps: int = 5,
        generator_steps: int = 1,
        directions: int = 1,
        epsilon: float = 1e-3,
        replay: bool = True,
        replay_size: int = 100_000,
        replay_steps: int = 0,
        student_loss: str = "l1",
        iterations: int = 1,
        seed: int = 0,
    ):
        super().__init__()
        self.automatic_optimization = False
        self.student, self.generator, self.api = student, generator, api
        self.student_lr, self.generator_lr = student_lr, generator_lr
        self.student_steps, self.generator_steps, self.directions = student_steps, generator_steps, directions
        self.epsilon, self.replay, self.replay_size, self.iterations = epsilon, replay, replay_size, iterations
        self.replay_steps, self.student_loss = replay_steps, STUDENT_LOSSES[student_loss]
        self.random = torch.Generator().manual_seed(seed)
        self.memory: tuple[Tensor, Tensor] | None = None  # the replay ring: images (R, C, H, W), logits (R, classes)
        self.stored, self.position = 0, 0

    def target_logits(self, images: Tensor) -> Tensor:
        """The API's answers for ``images`` (N, C, H, W) as centred log-probabilities (N, classes): N queries."""
        return centred_log_probs(self.api.output.scores(self.api.query(images))).to(images.device)

    def codes(self, batch: Tensor) -> Tensor:
        return torch.randn(batch.shape, generator=self.random).to(batch.device)

    def generator_step(self, z: Tensor, optimizer: torch.optim.Optimizer) -> float:
        """One ascent step of G on the estimated disagreement gradient (B x (1 + m) queries); returns L's mean."""
        images = self.generator(z)

        @torch.no_grad()
        def loss(points: Tensor) -> Tensor:
            return disagreement(self.student(points), self.target_logits(points))

        gradient, base = forward_difference_gradient(loss, images.detach(), self.directions, self.epsilon, self.random)
        optimizer.zero_grad()
        images.backward(-gradient / len(images))  # ascent on the batch's mean L
        optimizer.step()
        return base.mean().item()

    def student_step(self, z: Tensor, optimizer: torch.optim.Optimizer) -> float:
        """One descent step of S on fresh generated images (B queries) and a replayed batch; returns the loss."""
        with torch.no_grad():
            x = self.generator(z)
        answers = self.target_logits(x)
        loss = self.student_loss(self.student(x), answers).mean()
        if self.replay:
            self.remember(x, answers)
            images, logits = self.replayed(len(x))
            loss = loss + self.student_loss(self.student(images), logits).mean()
        optimizer.zero_grad()
        self.manual_backward(loss)
        optimizer.step()
        return loss.item()

    def remember(self, images: Tensor, logits: Tensor) -> None:
        """Keep answered ``images`` (N, C, H, W) and their ``logits`` (N, classes) in the replay ring (the oldest
        overwritten once it holds ``replay_size``)."""
        if self.memory is None:
            self.memory = (
                images.new_empty((self.replay_size, *images.shape[1:])),
                logits.new_empty((self.replay_size, *logits.shape[1:])),
            )
        slots = (self.position + torch.arange(len(images), device=images.device)) % self.replay_size
        self.memory[0][slots], self.memory[1][slots] = images.detach(), logits.detach()
        self.position = (self.position + len(images)) % self.replay_size
        self.stored = min(self.stored + len(images), self.replay_size)

    def replayed(self, count: int) -> tuple[Tensor, Tensor]:
        """``count`` answered images drawn uniformly from the replay memory, with their logits."""
        index = torch.randint(self.stored, (count,), generator=self.random).to(self.memory[0].device)
        return self.memory[0][index], self.memory[1][index]

    def replay_step(self, count: int, optimizer: torch.optim.Optimizer) -> None:
        """One descent step of S on ``count`` replayed answers alone (no query)."""
        images, logits = self.replayed(count)
        loss = self.student_loss(self.student(images), logits).mean()
        optimizer.zero_grad()
        self.manual_backward(loss)
        optimizer.step()

    def training_step(self, batch: Tensor, batch_idx: int) -> None:
        student_optimizer, generator_optimizer = self.optimizers()
        self.generator.train()
        for step in range(self.generator_steps):
            gap = self.generator_step(batch if step == 0 else self.codes(batch), generator_optimizer)
        self.generator.eval()  # frozen batch-norm statistics while S learns on its images
        for _ in range(self.student_steps):
            loss = self.student_step(self.codes(batch), student_optimizer)
        for _ in range(self.replay_steps if self.replay else 0):
            self.replay_step(len(batch), student_optimizer)
        for scheduler in self.lr_schedulers():
            scheduler.step()
        if writes_this_step(self.trainer):
            self.log_dict({"train/student_loss": loss, "train/generator_disagreement": gap}, batch_size=len(batch))

    def configure_optimizers(self):
        iterations = max(1, self.iterations)
        student = torch.optim.Adam(self.student.parameters(), lr=self.student_lr)
        generator = torch.optim.Adam(self.generator.parameters(), lr=self.generator_lr)
        schedulers = [torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=iterations) for o in (student, generator)]
        return [student, generator], schedulers


def queries_per_iteration(batch_size: int, student_steps: int, generator_steps: int, directions: int) -> int:
    """Images one iteration of the game sends to the API."""
    return generator_steps * batch_size * (1 + directions) + student_steps * batch_size


def check_data_free(node, budget: int, output: str, defense: Any = None) -> int:
    """Check ``data_free``'s settings against ``query_budget``, ``api.output`` and the API's output ``defense``
    (None: none); return the iterations."""
    keys = (
        "batch_size",
        "student_steps",
        "generator_steps",
        "directions",
        "latent_dim",
        "generator_width",
        "replay_size",
    )
    for key in keys:
        require_int(node[key], f"data_free.{key}")
    require_int(node.replay_steps, "data_free.replay_steps", minimum=0)
    require_choice(node.student_loss, STUDENT_LOSSES, "data_free.student_loss")
    for key in ("student_lr", "generator_lr", "epsilon"):
        require_positive(node[key], f"data_free.{key}")
    if output == "label":
        raise ConfigError(
            "queries=generator needs answers with scores (api.output=probs, logits or rounded): with labels alone the "
            "generator has no disagreement to climb."
        )
    if defense is not None and not getattr(defense, "reveals_scores", True):
        raise ConfigError(
            f"queries=generator needs answers with scores, but the API's defence ({defense!r}) answers each image's "
            "label alone: the generator would have no disagreement to climb, and the whole budget would be spent."
        )
    cost = queries_per_iteration(node.batch_size, node.student_steps, node.generator_steps, node.directions)
    if budget < cost:
        raise ConfigError(
            f"query_budget={budget} is too small for queries=generator: one iteration of the game costs {cost} queries "
            f"(data_free.batch_size x (generator_steps x (1 + directions) + student_steps)); raise query_budget or "
            "lower data_free.batch_size."
        )
    return budget // cost


def steal_data_free(
    student: nn.Module,
    api: BlackBoxAPI,
    image_shape: tuple[int, int, int],
    node,
    budget: int,
    trainer_cfg,
    seed: int,
    logger=False,
) -> nn.Module:
    """Train ``student`` by the data-free game within ``budget`` queries (``node``: the ``data_free`` config) with a
    Trainer of ``trainer_cfg`` (``conf/trainer/*.yaml``), the generator's weights and every draw from ``seed``; returns
    the student in eval mode."""
    iterations = check_data_free(node, budget, api.output.name)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        generator = Generator(image_shape, node.latent_dim, node.generator_width)
    system = DataFreeStealing(
        student,
        generator,
        api,
        student_lr=node.student_lr,
        generator_lr=node.generator_lr,
        student_steps=node.student_steps,
        generator_steps=node.generator_steps,
        directions=node.directions,
        epsilon=node.epsilon,
        replay=node.replay,
        replay_size=node.replay_size,
        replay_steps=node.replay_steps,
        student_loss=node.student_loss,
        iterations=iterations,
        seed=seed,
    )
    # One epoch of `iterations` batches: with two optimisers Lightning's step counter moves twice per step.
    trainer = build_trainer(
        trainer_cfg,
        max_epochs=1,
        max_steps=-1,
        logger=logger,
        limit_val_batches=0,
        callbacks=[StepLog("data-free game", unit="iteration")],
    )
    trainer.fit(system, train_dataloaders=LatentBatches(iterations, node.batch_size, node.latent_dim, seed))
    return student.eval()
