"""A generative prior for model inversion: a conditional GAN trained on the attacker's public images, labelled by the
target (PLG-MI: Yuan et al. 2023, "Pseudo Label-Guided Model Inversion Attack via Conditional Generative Adversarial
Network", AAAI; the generative-prior attack of GMI, Zhang et al. 2020, CVPR).

1. Public images (``gan.public``: images the target never trained on; of other classes than the target's under
   GMI's split, ``data=mnist_classes gan.public=other_classes``) are labelled by the target's top class, its
   pseudo-labels (PLG-MI; each counted in ``inversion/public_queries``).
2. A conditional generator G(z, y) (:class:`ConditionalGenerator`) and a projection discriminator D(x, y)
   (:class:`ProjectionDiscriminator`, Miyato & Koyama 2018, spectral norm) are trained with the hinge loss on the
   pseudo-labelled images; the generator also minimises the target's cross-entropy of y on G(z, y) (weight
   ``gan.target_weight``), as PLG-MI's generator does, so each class's codes map to images the target reads as it.
3. The inversion (``prior=gan``) optimises the codes z of G(z, ỹ) for each class ỹ against the attack's loss, the
   generator frozen: :class:`GeneratedImages` is the engine's parameterisation.

The generator is trained once per target (the content of its weights), public set, settings and attack seed, and
cached as ``gan-<hash>.pt``. Without a target (gradient inversion's ``prior=gan``) it is a plain conditional GAN on
the attacker's own labelled images, and :class:`TunedGenerators` gives each image its own copy to tune (GIAS).
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from privacy_attacks import cache
from privacy_attacks.attacks.stealing.data_free import Generator
from privacy_attacks.batched import in_batches, net_device
from privacy_attacks.callbacks.epoch_log import StepLog
from privacy_attacks.data.source import ImageSource
from privacy_attacks.data.subset import ClassSubset
from privacy_attacks.errors import ConfigError, require_int, require_positive
from privacy_attacks.harness import build_trainer, run_device, writes_this_step
from privacy_attacks.seeding import derive_seed, seeded

log = logging.getLogger(__name__)
PUBLIC_SETS = ("test_unseen", "other_classes")
GAN_KEYS = ("public", "latent_dim", "width", "steps", "batch_size", "lr", "target_weight")


class ConditionalGenerator(nn.Module):
    """G(z, y): codes z (N, latent_dim) and classes y (N,) -> images (N, C, H, W) in [0, 1]; the DFME generator
    (:class:`~privacy_attacks.attacks.stealing.data_free.Generator`) fed [z, one-hot(y)]."""

    def __init__(self, image_shape: tuple[int, int, int], num_classes: int, latent_dim: int = 64, width: int = 64):
        super().__init__()
        self.num_classes, self.latent_dim = num_classes, latent_dim
        self.body = Generator(tuple(image_shape), latent_dim + num_classes, width)

    def forward(self, z: Tensor, labels: Tensor) -> Tensor:
        return self.body(torch.cat([z, F.one_hot(labels, self.num_classes).to(z.dtype)], dim=1))


class ProjectionDiscriminator(nn.Module):
    """D(x, y) = w·φ(x) + e_y·φ(x) (Miyato & Koyama 2018): images (N, C, H, W) and classes (N,) -> scores (N,);
    φ two strided 4 x 4 convolutions and one 3 x 3, spectrally normalised, summed over positions."""

    def __init__(self, image_shape: tuple[int, int, int], num_classes: int, width: int = 64):
        super().__init__()
        channels = image_shape[0]
        self.features = nn.Sequential(
            spectral_norm(nn.Conv2d(channels, width, 4, 2, 1)),
            nn.LeakyReLU(0.2),
            spectral_norm(nn.Conv2d(width, 2 * width, 4, 2, 1)),
            nn.LeakyReLU(0.2),
            spectral_norm(nn.Conv2d(2 * width, 2 * width, 3, 1, 1)),
            nn.LeakyReLU(0.2),
        )
        self.linear = spectral_norm(nn.Linear(2 * width, 1))
        self.embed = spectral_norm(nn.Embedding(num_classes, 2 * width))

    def forward(self, images: Tensor, labels: Tensor) -> Tensor:
        phi = self.features(images).sum(dim=(2, 3))
        return self.linear(phi).squeeze(1) + (self.embed(labels) * phi).sum(dim=1)


class ConditionalGANTraining(L.LightningModule):
    """Hinge-loss training of G and D (one D step, one G step per batch of real images and their pseudo-labels),
    with the target's cross-entropy on G's images in G's loss (weight ``target_weight``; no target: a plain cGAN on
    the images' own labels). Manual optimisation; the fake codes and classes come from ``seed``. Logs
    ``gan/d_loss``, ``gan/g_loss``, ``gan/target_ce``."""

    def __init__(
        self,
        generator: ConditionalGenerator,
        discriminator: ProjectionDiscriminator,
        target: nn.Module | None,
        lr: float = 2e-4,
        target_weight: float = 1.0,
        seed: int = 0,
    ):
        super().__init__()
        self.automatic_optimization = False
        self.generator, self.discriminator, self.target = generator, discriminator, target
        self.lr, self.target_weight = lr, target_weight
        self.random = torch.Generator().manual_seed(seed)

    def fakes(self, count: int, device: torch.device) -> tuple[Tensor, Tensor]:
        z = torch.randn(count, self.generator.latent_dim, generator=self.random).to(device)
        labels = torch.randint(self.generator.num_classes, (count,), generator=self.random).to(device)
        return z, labels

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        d_optimizer, g_optimizer = self.optimizers()
        images, labels = batch
        z, fake_labels = self.fakes(len(images), images.device)
        with torch.no_grad():
            fake = self.generator(z, fake_labels)
        d_loss = F.relu(1 - self.discriminator(images, labels)).mean()
        d_loss = d_loss + F.relu(1 + self.discriminator(fake, fake_labels)).mean()
        d_optimizer.zero_grad()
        self.manual_backward(d_loss)
        d_optimizer.step()
        z, fake_labels = self.fakes(len(images), images.device)
        fake = self.generator(z, fake_labels)
        adversarial = -self.discriminator(fake, fake_labels).mean()
        target_ce = F.cross_entropy(self.target(fake), fake_labels) if self.target is not None else fake.new_zeros(())
        g_loss = adversarial + self.target_weight * target_ce
        g_optimizer.zero_grad()
        self.manual_backward(g_loss)
        g_optimizer.step()
        if writes_this_step(self.trainer):
            logged = {"gan/d_loss": d_loss, "gan/g_loss": adversarial, "gan/target_ce": target_ce}
            self.log_dict({k: v.detach() for k, v in logged.items()}, batch_size=len(images))

    def configure_optimizers(self):
        betas = (0.0, 0.9)  # the SN-GAN setting PLG-MI trains with
        return (
            torch.optim.Adam(self.discriminator.parameters(), lr=self.lr, betas=betas),
            torch.optim.Adam(self.generator.parameters(), lr=self.lr, betas=betas),
        )

    def train(self, mode: bool = True) -> ConditionalGANTraining:
        super().train(mode)
        if self.target is not None:
            self.target.eval()  # frozen, in eval mode throughout
        return self


class LabelledBatches:
    """``steps`` batches (images (B, C, H, W), labels (B,)) drawn at random, seeded, from the public images."""

    def __init__(self, images: Tensor, labels: Tensor, steps: int, batch_size: int, seed: int):
        self.images, self.labels, self.steps, self.batch_size, self.seed = images, labels, steps, batch_size, seed

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        random = torch.Generator().manual_seed(self.seed)
        for _ in range(self.steps):
            index = torch.randint(len(self.images), (self.batch_size,), generator=random)
            yield self.images[index], self.labels[index]


class GeneratedImages(nn.Module):
    """The engine's parameterisation for ``prior=gan``: codes (R·N, latent_dim) -> G(z, ỹ) (R·N, C, H, W), ỹ the N
    classes repeated for each of the R restarts (restart-major, as the engine stacks them); G frozen; the codes
    clipped to ``latent_clip`` after each step."""

    def __init__(self, generator: ConditionalGenerator, labels: Tensor, latent_clip: float | None = None):
        super().__init__()
        self.generator = generator.eval().requires_grad_(False)
        self.register_buffer("labels", labels.long())
        self.latent_shape, self.latent_clip = (generator.latent_dim,), latent_clip

    def project(self, latents: Tensor) -> Tensor:
        """The codes after a step: each coordinate clipped to [-latent_clip, latent_clip] (GMI's and KED-MI's
        projection onto the prior's typical range; None: left as they are)."""
        return latents if self.latent_clip is None else latents.clamp(-self.latent_clip, self.latent_clip)

    def forward(self, latents: Tensor) -> Tensor:
        restarts = len(latents) // len(self.labels)
        return self.generator(latents, self.labels.repeat(restarts))


class TunedGenerators(nn.Module):
    """GIAS's parameter search (Jeon et al., NeurIPS 2021, "Gradient Inversion with Generative Image Prior", §3.2):
    each of the R·N images (restart-major, as :class:`GeneratedImages`) has its own trainable copy of the generator,
    starting from ``generator``'s weights, and its code starts at ``codes`` (R·N, latent_dim), where a code search
    ended; codes (R·N, latent_dim) -> G_i(z_i, ỹ_i) (R·N, C, H, W). The copies stay in eval mode (their batch
    norms keep the trained statistics: one image per copy)."""

    def __init__(self, generator: ConditionalGenerator, labels: Tensor, codes: Tensor):
        super().__init__()
        if len(codes) % len(labels):
            raise ValueError(f"{len(codes)} codes are not a whole number of restarts of {len(labels)} images.")
        self.copies = nn.ModuleList(copy.deepcopy(generator).requires_grad_(True) for _ in range(len(codes)))
        self.register_buffer("labels", labels.long().repeat(len(codes) // len(labels)))
        self.latent_shape, self.initial_codes = (generator.latent_dim,), codes.detach().clone()
        self.eval()

    def forward(self, latents: Tensor) -> Tensor:
        return torch.cat([copy_(latents[i : i + 1], self.labels[i : i + 1]) for i, copy_ in enumerate(self.copies)])

    def train(self, mode: bool = True) -> TunedGenerators:
        return super().train(False)


def check_gan(node: DictConfig, source: ImageSource) -> None:
    """:class:`ConfigError` for a ``gan`` setting out of range, or public images the data's ``source`` cannot give,
    before any work."""
    if node.public not in PUBLIC_SETS:
        raise ConfigError(f"gan.public={node.public!r} is not allowed: choose one of {', '.join(PUBLIC_SETS)}.")
    if node.public == "other_classes" and not isinstance(source, ClassSubset):
        raise ConfigError(
            "gan.public=other_classes takes the classes the data leaves out: use a data config that keeps some "
            "classes (data=mnist_classes), or gan.public=test_unseen."
        )
    for key in ("latent_dim", "width", "steps", "batch_size"):
        require_int(node[key], f"gan.{key}")
    require_positive(node.lr, "gan.lr")
    require_positive(node.target_weight, "gan.target_weight", allow_zero=True)
    if node.latent_clip is not None:
        require_positive(node.latent_clip, "gan.latent_clip")


def public_images(source: ImageSource, public: str) -> Tensor:
    """The attacker's public images, none of which any recipe on this data trains on: ``test_unseen``, the second
    half of the data's test images (MNIST's 5,000-9,999), which the inversion never scores with; ``other_classes``,
    the training images of the classes a :class:`~privacy_attacks.data.subset.ClassSubset` leaves out (GMI's
    split: no private class is ever seen by the generator)."""
    if public == "test_unseen":
        test_images = source.load().test_images
        images = test_images[len(test_images) // 2 :]
    elif public == "other_classes" and isinstance(source, ClassSubset):
        images = source.excluded().train_images
    else:
        raise ConfigError(f"gan.public={public!r} is not allowed here: choose one of {', '.join(PUBLIC_SETS)}.")
    if len(images) == 0:
        raise ConfigError(f"gan.public={public} holds no image for this data: the generator has nothing to learn.")
    return images


def provision_generator(
    target: nn.Module | None,
    image_shape: tuple[int, int, int],
    num_classes: int,
    load_public: Callable[[], Tensor | tuple[Tensor, Tensor]],
    public_key: dict[str, Any],
    settings: DictConfig,
    seed: int,
    trainer_cfg: DictConfig,
    cache_dir: str | Path,
) -> tuple[ConditionalGenerator, dict[str, float]]:
    """The conditional generator of ``settings`` (``gan`` in ``conf/attack/inversion.yaml``) for ``target``, trained
    on the pseudo-labelled public images (``load_public() -> (P, C, H, W)``, read only when it must be trained;
    ``public_key`` names them in the cache key) from the attack's ``seed``, or loaded from the cache. Returns the
    frozen generator on the CPU and ``{"inversion/public_queries": P}``, the images the target labelled for it
    (kept with the cached generator: a run that loads it reports the queries it was trained with).

    ``target`` None: a plain conditional GAN on labelled public images (``load_public() -> ((P, C, H, W), (P,))``,
    the attacker's own labels; no query, ``target_weight`` unused), the image prior of gradient inversion."""
    kept = {key: settings[key] for key in GAN_KEYS if key in settings}
    if target is None:
        kept.pop("target_weight", None)
    digest = None if target is None else cache.weights_digest(target)
    spec = {"format": 2, "target_weights": digest, "public": public_key, "seed": seed, **kept}
    spec.update(cache.device_entry(run_device(trainer_cfg).type))
    path = cache.cache_path(cache_dir, "gan", spec)

    def build() -> ConditionalGenerator:
        return ConditionalGenerator(image_shape, num_classes, int(kept["latent_dim"]), int(kept["width"]))

    def load(path: Path) -> tuple[ConditionalGenerator, float]:
        generator, saved = build(), cache.read(path)
        try:
            generator.load_state_dict(saved["state_dict"])
            return generator, float(saved["public_queries"])
        except Exception as error:  # noqa: BLE001 - a file of another layout means the same to the user
            raise cache.unusable(path, f"does not fit the generator ({type(error).__name__})") from error

    def train(path: Path) -> tuple[ConditionalGenerator, float]:
        if target is None:  # the attacker's own labelled images: no query
            images, labels = load_public()
            labels, queries = labels.long(), 0
        else:
            images = load_public()
            queries = len(images)  # PLG-MI's pseudo-labels: the target's top class of each public image
            labels = in_batches(
                lambda chunk: target(chunk).argmax(-1), images, batch_size=1000, device=net_device(target)
            )
        counts = torch.bincount(labels, minlength=num_classes).tolist()
        log.info(
            "Training the generative prior on %d public images (%s per class %s), cached at %s.",
            len(images),
            "labels" if target is None else "pseudo-labels",
            counts,
            path,
        )
        with seeded(seed, "gan"):
            generator = build()
            discriminator = ProjectionDiscriminator(image_shape, num_classes, int(kept["width"]))
        system = ConditionalGANTraining(
            generator,
            discriminator,
            target,
            float(kept["lr"]),
            float(kept.get("target_weight", 0.0)),
            derive_seed(seed, "gan", "fakes") % 2**63,
        )
        batches = LabelledBatches(
            images, labels, int(kept["steps"]), int(kept["batch_size"]), derive_seed(seed, "gan", "batches") % 2**63
        )
        trainer = build_trainer(
            trainer_cfg,
            max_epochs=1,
            limit_val_batches=0,
            log_every_n_steps=50,
            callbacks=[StepLog("generative prior")],
        )
        with warnings.catch_warnings():  # the frozen target inside the system is in eval mode on purpose
            warnings.filterwarnings("ignore", message=".*module\\(s\\) in eval mode.*")
            trainer.fit(system, train_dataloaders=batches)
        state = {k: v.detach().cpu() for k, v in generator.state_dict().items()}
        cache.save(path, {"state_dict": state, "public_queries": queries})
        return generator, float(queries)

    generator, queries = cache.provision(path, create=train, load=load)[0]
    return generator.cpu().eval().requires_grad_(False), {"inversion/public_queries": queries}
