"""Shadow models: many small classifiers trained at once, cached on disk by their config.

Shadow models (Shokri et al. 2017, "Membership inference attacks against machine learning
models"; Carlini et al. 2022, "Membership inference attacks from first principles") imitate
the target's training on data whose membership the attacker knows. Here they follow the
target's recipe (network, optimiser, scheduler, epochs, batch size, label smoothing and a moving average of the
weights: the attacker is assumed to know how the target was trained), each on its own subset of the same size.
Early stopping is not followed (it needs a validation split of each model's own): they train every epoch.

``S`` small networks (LeNet5s on MNIST) train as one vectorised model (``torch.func.vmap`` over stacked weights,
Carlini et al.'s JAX code does the same), which on a CPU is several times faster than ``S``
sequential fits. Adam and the cosine schedule act element-wise, so the stacked optimisation
is exactly ``S`` independent ones.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state
from tqdm.auto import tqdm

from privacy_attacks import cache
from privacy_attacks.batched import in_batches, vmap_refusal
from privacy_attacks.callbacks.epoch_log import ProgressLog
from privacy_attacks.errors import ConfigError
from privacy_attacks.models.layers import load_stacked
from privacy_attacks.seeding import generator, seeded
from privacy_attacks.targets import without_neutral_net_keys

log = logging.getLogger(__name__)
SHADOW_FORMAT = 2


@dataclass
class ShadowModels:
    """``S`` trained classifiers of one architecture, as stacked weights.

    Attributes:
        template: an instance of the architecture (its own weights are unused).
        params: name -> stacked parameter (S, ...).
        buffers: name -> stacked buffer (S, ...).
        train_indices: long (S, n): the population positions each model was trained on.
        in_mask: bool (S, P): ``in_mask[s, i]`` is True when model ``s`` trained on population image ``i``.
    """

    template: nn.Module
    params: dict[str, Tensor]
    buffers: dict[str, Tensor]
    train_indices: Tensor
    in_mask: Tensor

    def __len__(self) -> int:
        return len(self.train_indices)

    @property
    def device(self) -> torch.device:
        """Where the stacked weights are (the models run there)."""
        return next(iter(self.params.values())).device

    @torch.no_grad()
    def logits(self, images: Tensor, batch_size: int = 2000, max_pairs: int = 2000 * 64) -> Tensor:
        """Logits (S, N, C), on the CPU, of every model for images (N, C, H, W) (computed on :attr:`device`), in eval
        mode, as the target answers (batch norm reads each model's running statistics and leaves them unchanged).

        Images go through in chunks of ``batch_size``, fewer where the S models would then pass more than
        ``max_pairs`` (model, image) pairs at once: the activations of one forward grow with S × chunk (about 10 GB
        for 256 LeNet5s on 2,000 images), so 256 models read 500 images at a time, and up to 64 models 2,000."""
        batch_size = max(1, min(batch_size, max_pairs // max(1, len(self))))
        forward = torch.vmap(lambda p, b, x: functional_call(self.template, (p, b), (x,)), in_dims=(0, 0, None))
        was_training = self.template.training
        self.template.eval()
        try:
            return in_batches(
                lambda chunk: forward(self.params, self.buffers, chunk),
                images,
                batch_size=batch_size,
                device=self.device,
                dim=1,
            )
        finally:
            self.template.train(was_training)

    def model(self, s: int) -> nn.Module:
        """Model ``s`` as a plain frozen ``nn.Module``."""
        net = copy.deepcopy(self.template)  # on the meta device: ``assign`` puts model s's tensors in its place
        return load_stacked(net, {**self.params, **self.buffers}, s, assign=True).eval().requires_grad_(False)


def balanced_in_masks(population: int, num_models: int, generator: torch.Generator) -> Tensor:
    """Bool (S, P) masks where each image is IN for exactly half of the models (S even).

    Models come in pairs with complementary random halves (Carlini et al. 2022 sample each
    image IN with probability 1/2; pairing makes it exact, so every image has S/2 IN and S/2 OUT models).
    """
    masks = []
    for _ in range(num_models // 2):
        half = torch.zeros(population, dtype=torch.bool)
        half[torch.randperm(population, generator=generator)[: population // 2]] = True
        masks += [half, ~half]
    return torch.stack(masks)


def partition_in_masks(population: int, subset_size: int, num_models: int, generator: torch.Generator) -> Tensor:
    """Bool (S, P) masks of ``subset_size`` images each, for a population of more than twice that: models come in
    groups of k = P // subset_size that split one random permutation into k disjoint subsets, so every image is IN
    for about S / (P / subset_size) models and OUT for the rest (exactly S / k where k divides S and P)."""
    per_group = population // subset_size
    masks = []
    while len(masks) < num_models:
        order = torch.randperm(population, generator=generator)
        for chunk in order[: per_group * subset_size].view(per_group, subset_size):
            mask = torch.zeros(population, dtype=torch.bool)
            mask[chunk] = True
            masks.append(mask)
    return torch.stack(masks[:num_models])


class StackedEMA:
    """An exponential moving average of stacked weights, as the target's recipe keeps one (``ema_decay``: Lightning's
    ``EMAWeightAveraging``, torch's ``AveragedModel`` with buffers): after every optimiser step
    ``average = decay * average + (1 - decay) * weights``, the first step's weights copied."""

    def __init__(self, decay: float):
        self.decay = float(decay)
        self.params: dict[str, Tensor] | None = None
        self.buffers: dict[str, Tensor] = {}

    @torch.no_grad()
    def update(self, params: dict[str, Tensor], buffers: dict[str, Tensor]) -> None:
        """Fold in the weights after one optimiser step: name -> (S, ...) each."""
        if self.params is None:
            self.params = {k: v.detach().clone() for k, v in params.items()}
            self.buffers = {k: v.detach().clone() for k, v in buffers.items()}
            return
        for averages, current in ((self.params, params), (self.buffers, buffers)):
            for name, average in averages.items():
                average.copy_(self.decay * average + (1 - self.decay) * current[name].detach())


class EpochCheckpoint:
    """Where a stacked fit saves its state at the end of an epoch (at most every ``every_s`` seconds, never after the
    last), so that a fit interrupted (Ctrl-C, SIGTERM, a crash) goes on from its last saved epoch when run again,
    to the weights the uninterrupted fit gives: the weights, buffers, optimiser and schedule, the moving average,
    and every random generator's state. ``path`` None: nothing saved or read."""

    def __init__(self, path: Path | None, every_s: float = 60.0):
        self.path, self.every_s = path, float(every_s)
        self.last = time.monotonic()

    def load(self) -> dict[str, Any] | None:
        """The state last saved (None: none, or unreadable: the fit starts afresh)."""
        if self.path is None or not self.path.exists():
            return None
        try:
            state = cache.read(self.path)
            epoch = int(state["epoch"])
        except Exception as error:  # noqa: BLE001 - a partial file of another layout: start again
            log.warning(
                "Could not read the interrupted fit's state %s (%s): training from the start.", self.path, error
            )
            return None
        log.info("Going on from epoch %d of an interrupted fit (%s).", epoch, self.path)
        return state

    def due(self, epoch: int, epochs: int) -> bool:
        """Whether to save after ``epoch`` of ``epochs`` (1-based)."""
        return self.path is not None and epoch < epochs and time.monotonic() - self.last >= self.every_s

    def save(self, state: dict[str, Any]) -> None:
        cache.save(self.path, state)
        self.last = time.monotonic()


def _generator_states(generators: Sequence[torch.Generator]) -> list[Tensor]:
    return [g.get_state() for g in generators]


def _set_generator_states(generators: Sequence[torch.Generator], states: Sequence[Tensor]) -> None:
    for g, state in zip(generators, states, strict=True):
        g.set_state(state)


def train_shadow_models(
    recipe: DictConfig,
    images: Tensor,
    labels: Tensor,
    train_indices: Tensor,
    seeds: Sequence[int],
    progress: bool = True,
    device: str | torch.device = "cpu",
    checkpoint: EpochCheckpoint | None = None,
) -> ShadowModels:
    """Train ``S = len(train_indices)`` models of ``recipe`` at once, model ``s`` on ``images[train_indices[s]]``.

    Args:
        recipe: a classifier recipe (``conf/model/*.yaml``): ``net``, partial ``optimizer`` and
            ``scheduler`` (stepped per epoch, like Lightning), ``max_epochs``, ``batch_size``, and if set
            ``label_smoothing`` of the training loss and ``ema_decay`` (the models are the moving average of their
            weights, :class:`StackedEMA`); ``early_stopping_patience`` is not followed (a warning says so).
        images: float (P, C, H, W) in [0, 1], the population.
        labels: long (P,).
        train_indices: long (S, n), every model trains on n population images.
        seeds: (S,) model ``s``'s initial weights and batch order come from ``seeds[s]`` alone, so the
            stacked fit equals ``S`` independent fits (each a call with one row and one seed).
        progress: a progress bar over the epochs where the output is a terminal (none in log files, e.g. under
            the joblib launcher); False: never.
        device: where the models train (initial weights and batch orders are drawn on the CPU, so they do not
            depend on it); the returned weights stay there.
        checkpoint: where the fit's state is saved after an epoch, and read back from if an earlier fit of the
            same models was interrupted (:class:`EpochCheckpoint`); None: nothing saved.
    """
    checkpoint = checkpoint or EpochCheckpoint(None)
    num_models, n = train_indices.shape
    if len(seeds) != num_models:
        raise ValueError(f"{num_models} shadow models but {len(seeds)} seeds.")
    device = torch.device(device)
    models = []
    for seed in seeds:
        with seeded(seed, "init"):
            models.append(instantiate(recipe.net).to(device))
    refusal = vmap_refusal(models[0], images[:2])
    if refusal is not None:
        raise ConfigError(
            f"{refusal}: membership inference trains its shadow and reference models as one stacked model. Write "
            "the network's branches on tensor values with torch.where, or give the attacker's models another "
            "network (net@attacker_net=<name>)."
        )
    in_mask = torch.zeros(num_models, len(labels), dtype=torch.bool)
    in_mask.scatter_(1, train_indices, True)
    images, labels, train_indices = images.to(device), labels.to(device), train_indices.to(device)
    params, buffers = stack_module_state(models)
    template = copy.deepcopy(models[0]).to("meta")
    optimizer = instantiate(recipe.optimizer)(params=list(params.values()))
    scheduler = instantiate(recipe.scheduler)(optimizer=optimizer) if recipe.get("scheduler") else None
    # Random layers (dropout) draw a mask per model from the global RNG, seeded below from all the models' seeds:
    # reproducible, though not the masks of independent fits (networks without them are unaffected).
    forward = torch.vmap(lambda p, b, x: functional_call(template, (p, b), (x,)), randomness="different")
    orders = [generator(seed, "batches") for seed in seeds]
    batch_size = int(recipe.batch_size)
    smoothing = float(recipe.get("label_smoothing") or 0.0)
    ema = StackedEMA(recipe.ema_decay) if recipe.get("ema_decay") is not None else None
    patience = recipe.get("early_stopping_patience")
    if patience is not None:
        log.warning(
            "The shadow models train all %d epochs of their recipe: its early_stopping_patience=%s needs a "
            "validation split of each model's own, which they do not hold.",
            int(recipe.max_epochs),
            patience,
        )

    def after_step() -> None:
        if ema is not None:
            ema.update(params, buffers)

    def state(epoch: int, generators: Sequence[torch.Generator]) -> dict[str, Any]:
        """The fit after ``epoch`` epochs, as :class:`EpochCheckpoint` saves it (on the CPU)."""
        on_cpu = lambda tensors: {k: v.detach().cpu() for k, v in tensors.items()}  # noqa: E731
        return {
            "epoch": epoch,
            "params": on_cpu(params),
            "buffers": on_cpu(buffers),
            "optimizer": optimizer.state_dict(),
            "scheduler": None if scheduler is None else scheduler.state_dict(),
            "generators": _generator_states(generators),
            "rng": torch.get_rng_state(),
            "cuda_rng": [torch.cuda.get_rng_state(device)] if device.type == "cuda" else [],
            "ema": None
            if ema is None or ema.params is None
            else {"params": on_cpu(ema.params), "buffers": on_cpu(ema.buffers)},
        }

    def restore(saved: dict[str, Any], generators: Sequence[torch.Generator]) -> int:
        """Put the fit back where ``saved`` left it; returns the epochs done."""
        for tensors, key in ((params, "params"), (buffers, "buffers")):
            shapes = {name: tuple(value.shape) for name, value in saved[key].items()}
            if shapes != {name: tuple(value.shape) for name, value in tensors.items()}:
                raise cache.unusable(checkpoint.path, "holds the state of other models")
        with torch.no_grad():
            for tensors, key in ((params, "params"), (buffers, "buffers")):
                for name, value in tensors.items():
                    value.copy_(saved[key][name].to(device))
        optimizer.load_state_dict(saved["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(saved["scheduler"])
        _set_generator_states(generators, saved["generators"])
        if ema is not None and saved["ema"] is not None:
            ema.params = {k: v.to(device) for k, v in saved["ema"]["params"].items()}
            ema.buffers = {k: v.to(device) for k, v in saved["ema"]["buffers"].items()}
        return int(saved["epoch"])

    def restore_rng(saved: dict[str, Any]) -> None:
        torch.set_rng_state(saved["rng"])
        if saved["cuda_rng"] and device.type == "cuda":
            torch.cuda.set_rng_state(saved["cuda_rng"][0], device)

    def finished() -> ShadowModels:
        final = {k: v.detach() for k, v in params.items()}
        kept = buffers
        if ema is not None and ema.params is not None:
            final, kept = ema.params, ema.buffers
        return ShadowModels(template, final, kept, train_indices.cpu(), in_mask)

    if recipe.get("privacy") is not None:  # the target's DP-SGD, followed by the attacker (shadow_privacy=true)
        private = PrivateShadowTraining(
            instantiate(recipe.privacy), template, n, batch_size, int(recipe.max_epochs), smoothing
        )
        private.fit(
            params, buffers, optimizer, scheduler, images, labels, train_indices, seeds, progress, after_step,
            resume=(checkpoint, state, restore),
        )  # fmt: skip
        return finished()
    saved = checkpoint.load()
    done = 0 if saved is None else restore(saved, orders)
    max_epochs = int(recipe.max_epochs)
    epochs = tqdm(
        range(done, max_epochs),
        desc=f"{num_models} shadow models",
        disable=None if progress else True,
        leave=False,
        initial=done,
        total=max_epochs,
    )
    progress_log = ProgressLog(f"{num_models} shadow models", max_epochs)
    with seeded(seeds[0], "random_layers", *seeds):
        if saved is not None:
            restore_rng(saved)
        for epoch in epochs:
            order = torch.stack([torch.randperm(n, generator=g) for g in orders]).to(device)
            epoch_indices = train_indices.gather(1, order)
            for start in range(0, n, batch_size):
                batch = epoch_indices[:, start : start + batch_size]  # (S, B)
                logits = forward(params, buffers, images[batch])  # (S, B, C)
                # Sum over models of each model's mean loss: every model gets its own gradient.
                loss = F.cross_entropy(
                    logits.flatten(0, 1), labels[batch].flatten(), reduction="none", label_smoothing=smoothing
                )
                loss = loss.view(num_models, -1).mean(dim=1).sum()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                after_step()
            if scheduler is not None:
                scheduler.step()
            if progress_log.due(epoch + 1):  # reads the loss (a device sync) only when a line is written
                progress_log.step(epoch + 1, {"train/loss": float(loss.detach()) / num_models})
            if checkpoint.due(epoch + 1, max_epochs):
                checkpoint.save(state(epoch + 1, orders))
    return finished()


class PrivateShadowTraining:
    """DP-SGD for stacked shadow models (Abadi et al. 2016), as :class:`privacy_attacks.defenses.DPSGD` trains the
    target: Poisson-sampled batches (each of a model's n images joins a step with probability q = 1 / steps per
    epoch, from the model's own generator), each example's gradient (``torch.func``, vmapped over examples and
    models) clipped to ``max_grad_norm``, the clipped sum plus Gaussian noise of std ``noise_multiplier ·
    max_grad_norm`` (the model's own generator), divided by the expected batch size q·n, then the recipe's optimiser.

    Args:
        dpsgd: the target's training defence (its noise follows from ε, δ, q and the epochs, as for the target).
        template: the architecture (on the meta device).
        n: images per model; batch_size: the recipe's batch size (q = 1 / ceil(n / batch_size)); epochs: the recipe's.
        label_smoothing: the recipe's, in each example's loss.
    """

    def __init__(self, dpsgd, template: nn.Module, n: int, batch_size: int, epochs: int, label_smoothing: float = 0.0):
        self.label_smoothing = float(label_smoothing)
        self.steps_per_epoch = max(1, -(-n // batch_size))
        self.sample_rate = 1.0 / self.steps_per_epoch
        self.epochs, self.n, self.template = epochs, n, template
        self.max_grad_norm = float(dpsgd.max_grad_norm)
        self.noise_multiplier = dpsgd.noise_multiplier_for(self.sample_rate, epochs)

    def clipped_noisy_gradient(
        self, params: dict[str, Tensor], buffers: dict[str, Tensor], images: Tensor, labels: Tensor, weights: Tensor,
        noise: dict[str, Tensor],
    ) -> dict[str, Tensor]:  # fmt: skip
        """The private gradient of each model: images (S, M, C, H, W), labels (S, M), weights (S, M) (1 for a
        sampled example, 0 for padding), noise: name -> standard normal (S, ...) draws. Returns name -> (S, ...)."""

        def example_loss(p: dict[str, Tensor], b: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
            logits = functional_call(self.template, (p, b), (x[None],))
            return F.cross_entropy(logits, y[None], label_smoothing=self.label_smoothing)

        per_example = torch.vmap(
            torch.vmap(torch.func.grad(example_loss), in_dims=(None, None, 0, 0)), in_dims=(0, 0, 0, 0)
        )(params, buffers, images, labels)  # name -> (S, M, ...)
        norms = torch.sqrt(sum(g.flatten(2).pow(2).sum(-1) for g in per_example.values()))  # (S, M)
        scale = (self.max_grad_norm / (norms + 1e-6)).clamp(max=1.0) * weights
        expected = self.sample_rate * self.n
        return {
            name: (torch.einsum("sm,sm...->s...", scale, g) + self.noise_multiplier * self.max_grad_norm * noise[name])
            / expected
            for name, g in per_example.items()
        }

    def fit(
        self,
        params,
        buffers,
        optimizer,
        scheduler,
        images,
        labels,
        train_indices,
        seeds,
        progress,
        after_step=None,
        resume=None,
    ) -> None:
        """Train the stacked ``params`` in place for the recipe's epochs (``after_step()`` after each step).
        ``resume``: (the :class:`EpochCheckpoint`, a function of (epoch, generators) giving the state to save, one
        of (state, generators) putting it back and giving the epochs done), or None."""
        num_models, device = len(seeds), train_indices.device
        draws = [generator(seed, "dp_batches") for seed in seeds]
        noises = [generator(seed, "dp_noise") for seed in seeds]
        checkpoint, state, restore = resume if resume is not None else (EpochCheckpoint(None), None, None)
        saved = checkpoint.load()
        done = 0 if saved is None else restore(saved, [*draws, *noises])
        progress_log = ProgressLog(f"{num_models} private shadow models", self.epochs)
        for epoch in tqdm(
            range(done, self.epochs),
            desc=f"{num_models} private shadow models",
            disable=None if progress else True,
            leave=False,
            initial=done,
            total=self.epochs,
        ):
            for _ in range(self.steps_per_epoch):
                masks = torch.stack([torch.rand(self.n, generator=g) < self.sample_rate for g in draws])  # (S, n)
                width = max(1, int(masks.sum(dim=1).max()))
                order = masks.float().argsort(dim=1, descending=True, stable=True)[:, :width]  # sampled ones first
                weights = masks.gather(1, order).float().to(device)
                batch = train_indices.gather(1, order.to(device))  # (S, M)
                detached = {k: v.detach() for k, v in params.items()}
                noise = {
                    k: torch.stack([torch.randn(v.shape[1:], generator=g) for g in noises]).to(device)
                    for k, v in params.items()
                }
                gradient = self.clipped_noisy_gradient(detached, buffers, images[batch], labels[batch], weights, noise)
                for name, value in params.items():
                    value.grad = gradient[name]
                optimizer.step()
                if after_step is not None:
                    after_step()
            if scheduler is not None:
                scheduler.step()
            progress_log.step(epoch + 1)
            if checkpoint.due(epoch + 1, self.epochs):
                checkpoint.save(state(epoch + 1, [*draws, *noises]))


def shadow_cache_path(
    cache_dir: str | Path,
    recipe: DictConfig,
    images: Tensor,
    labels: Tensor,
    train_indices: Tensor,
    seeds: Sequence[int],
    device: str = "cpu",
) -> Path:
    """``<cache_dir>/shadows-<hash>.pt``, keyed by the recipe, the population's content (images and labels),
    each model's training subset, the models' seeds and the device they train on (:func:`~privacy_attacks.cache.
    device_entry`: its type when not the CPU, else the thread count when not the unkeyed one)."""
    spec = {
        "format": SHADOW_FORMAT,
        "recipe": without_neutral_net_keys(OmegaConf.to_container(recipe, resolve=True)),
        "images": cache.tensor_digest(images),
        "labels": cache.tensor_digest(labels),
        "train_indices": cache.tensor_digest(train_indices),
        "shape": list(train_indices.shape),
        "seeds": [int(seed) for seed in seeds],
    }
    if recipe.get("label_smoothing") or recipe.get("ema_decay") is not None:
        spec["regularisers"] = "followed"  # models cached before they followed these trained without them
    spec.update(cache.device_entry(device))
    return cache.cache_path(cache_dir, "shadows", spec)


def provision_shadow_models(
    recipe: DictConfig,
    images: Tensor,
    labels: Tensor,
    train_indices: Tensor,
    seeds: Sequence[int],
    cache_dir: str | Path,
    device: str | torch.device = "cpu",
    checkpoint_every_s: float = 60.0,
) -> tuple[ShadowModels, bool]:
    """Shadow models of ``recipe`` for these training subsets, trained once on ``device`` and cached on disk; a fit
    interrupted goes on, when run again, from the state it saved after an epoch at most every ``checkpoint_every_s``
    seconds (:func:`~privacy_attacks.cache.partial_path`, removed once the models are cached).

    The cache key is the population's content, not its dataset indices (the attacker holds images, not
    indices). Returns the models, on ``device``, and whether they came from the cache.
    """
    device = torch.device(device)
    recipe = OmegaConf.create(OmegaConf.to_container(recipe, resolve=True))
    recipe.pop("members", None)  # the subset size is in train_indices
    path = shadow_cache_path(cache_dir, recipe, images, labels, train_indices, seeds, device.type)

    def load(path: Path) -> ShadowModels:
        saved = cache.read(path)
        try:
            template = instantiate(recipe.net).to("meta")
            in_mask = torch.zeros(len(train_indices), len(labels), dtype=torch.bool).scatter_(1, train_indices, True)
            params = {k: v.to(device) for k, v in saved["params"].items()}
            buffers = {k: v.to(device) for k, v in saved["buffers"].items()}
            return ShadowModels(template, params, buffers, train_indices, in_mask)
        except Exception as error:  # noqa: BLE001 - a file of another layout means the same to the user
            raise cache.unusable(path, f"is not a shadow-model checkpoint ({type(error).__name__})") from error

    def train(path: Path) -> ShadowModels:
        log.info("Training %d shadow models on %d images each (cached at %s).", *train_indices.shape, path)
        checkpoint = EpochCheckpoint(cache.partial_path(path), every_s=checkpoint_every_s)
        shadows = train_shadow_models(
            recipe, images, labels, train_indices, seeds, device=device, checkpoint=checkpoint
        )
        on_cpu = {part: {k: v.cpu() for k, v in getattr(shadows, part).items()} for part in ("params", "buffers")}
        cache.save(path, {"format": SHADOW_FORMAT, **on_cpu})  # cache.provision then discards the partial state
        return shadows

    return cache.provision(path, create=train, load=load)


def subset_indices(in_mask: Tensor) -> Tensor:
    """Long (S, n) positions of the True entries of equal-count bool masks (S, P)."""
    counts = in_mask.sum(dim=1)
    if not bool((counts == counts[0]).all()):
        raise ValueError("every shadow model must train on the same number of images")
    return in_mask.nonzero()[:, 1].view(len(in_mask), -1)
