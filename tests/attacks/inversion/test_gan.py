"""The generative prior of output inversion (prior=gan): the generator and discriminator for any shape, the engine
optimising codes through a frozen generator, the cached generator and a small run end to end."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
import torch
from omegaconf import open_dict

from privacy_attacks.attacks.inversion.gan import (
    ConditionalGenerator,
    GeneratedImages,
    ProjectionDiscriminator,
    public_images,
)
from privacy_attacks.attacks.inversion.objectives import ClassInversion, LogitSimilarity
from privacy_attacks.engine import ReconstructionModule, fit_reconstruction
from privacy_attacks.errors import ConfigError
from privacy_attacks.models import LeNet5
from privacy_attacks.pipelines import run_attack
from tests.conftest import TINY_INVERSION

TRAINER = {"accelerator": "cpu", "devices": 1, "enable_progress_bar": False}


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_generator_and_discriminator_take_any_image_shape_and_class_count(shape):
    generator = ConditionalGenerator(shape, 7, latent_dim=16, width=8)
    discriminator = ProjectionDiscriminator(shape, 7, width=8)
    labels = torch.arange(7) % 7
    images = generator(torch.randn(7, 16), labels)
    assert images.shape == (7, *shape) and 0 <= images.min() and images.max() <= 1
    assert discriminator(images, labels).shape == (7,)
    # The class enters the image: one code, two classes, two images.
    z = torch.randn(1, 16).repeat(2, 1)
    generator.eval()
    pair = generator(z, torch.tensor([0, 1]))
    assert not torch.allclose(pair[0], pair[1])


def test_generated_images_repeat_the_classes_for_each_restart_and_clip_the_codes():
    generator = ConditionalGenerator((1, 28, 28), 10, latent_dim=4, width=8).eval()
    images = GeneratedImages(generator, torch.tensor([3, 5]), latent_clip=1.0)
    z = torch.randn(6, 4)  # 3 restarts x 2 classes, restart-major
    expected = generator(z, torch.tensor([3, 5, 3, 5, 3, 5]))
    assert torch.equal(images(z), expected)
    assert images.project(torch.tensor([[-3.0, 0.5, 2.0, -0.25]])).tolist() == [[-1.0, 0.5, 1.0, -0.25]]
    assert torch.equal(GeneratedImages(generator, torch.tensor([3]), None).project(z), z)
    assert not any(p.requires_grad for p in images.parameters())


def test_the_engine_optimises_the_codes_through_the_frozen_generator():
    torch.manual_seed(0)
    net = LeNet5().eval().requires_grad_(False)
    generator = ConditionalGenerator((1, 28, 28), 10, latent_dim=8, width=8).eval()
    before = {k: v.clone() for k, v in generator.state_dict().items()}
    labels = torch.arange(10)
    parameterisation = GeneratedImages(generator, labels, latent_clip=1.0)
    objective = ClassInversion(net, labels, LogitSimilarity())
    module = ReconstructionModule(
        objective, {}, None, partial(torch.optim.Adam, lr=0.1), steps=20, restarts=2, parameterisation=parameterisation
    )
    start = module.latents.detach().clone()
    first = module()[0].detach()
    fit_reconstruction(module, TRAINER)
    assert not hasattr(module, "images") and module.latents.shape == (20, 8)
    assert not torch.equal(module.latents.detach(), start) and module.latents.abs().max() <= 1.0
    images, losses = module.reconstructions()
    assert images.shape == (10, 1, 28, 28) and bool((losses <= first.view(2, 10).min(dim=0).values).all())
    best, _ = module.all_reconstructions()
    assert torch.equal(images, best[module.best_loss.view(2, 10).argmin(dim=0), torch.arange(10)])
    assert all(torch.equal(before[k], v) for k, v in generator.state_dict().items())  # the prior is not trained


def test_the_codes_live_where_the_generator_does():
    """A generator on another device than the CPU (here the meta device, as a stand-in for a GPU): the codes are
    made there, so a generator loaded from the cache onto the target's device runs."""
    generator = ConditionalGenerator((1, 28, 28), 10, latent_dim=4, width=8).eval().to("meta")
    objective = ClassInversion(LeNet5().eval().requires_grad_(False).to("meta"), torch.arange(10), LogitSimilarity())
    parameterisation = GeneratedImages(generator, torch.arange(10)).to("meta")
    module = ReconstructionModule(objective, {}, None, steps=1, restarts=2, parameterisation=parameterisation)
    assert module.latents.device.type == "meta" and module.best_images.shape == (20, 1, 28, 28)


def test_public_images_are_never_trained_on_and_other_classes_never_private():
    from privacy_attacks.data import ClassSubset, SyntheticSource

    source = SyntheticSource(image_shape=(1, 8, 8), num_classes=4, train_size=200, test_size=40)
    data = source.load()
    assert torch.equal(public_images(source, "test_unseen"), data.test_images[20:])
    subset = ClassSubset(source, [2, 0])
    private, public = subset.load(), public_images(subset, "other_classes")
    assert set(private.train_labels.tolist()) == {0, 1}  # 2 -> 0, 0 -> 1
    assert torch.equal(private.train_images[private.train_labels == 0], data.train_images[data.train_labels == 2])
    assert torch.equal(public, data.train_images[(data.train_labels == 1) | (data.train_labels == 3)])
    with pytest.raises(ConfigError, match="test_unseen"):
        public_images(source, "other_classes")  # the data keeps every class: there are no other classes


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("prior=stylegan", "pixels, gan"),
        ("gan.public=train", "gan.public='train'"),
        ("gan.public=other_classes", "data=mnist_classes"),  # MNIST keeps every class
        ("gan.steps=0", "gan.steps=0"),
        ("gan.latent_clip=-1", "gan.latent_clip"),
        ("gan.target_weight=-1", "gan.target_weight"),
    ],
)
def test_bad_gan_settings_fail_before_any_work(compose_attack, tmp_path, override, message):
    overrides = ["attack=inversion", *([] if override.startswith("prior=") else ["prior=gan"]), override]
    cfg = compose_attack(overrides)
    with open_dict(cfg):
        cfg.paths.cache_dir = str(tmp_path / "empty_cache")
    with pytest.raises(ConfigError, match=message):
        run_attack(cfg)
    assert not (tmp_path / "empty_cache").exists()


# Synthetic 1x28x28 images of 10 classes (300 training, 60 test: 30 public), LeNet5 target and judges, a generator
# trained for a few steps: seconds.
TINY_GAN = [
    *TINY_INVERSION,
    "prior=gan",
    "gan.steps=4",
    "gan.width=8",
    "gan.batch_size=8",
    "steps=3",
    "restarts=2",
]


def test_a_small_gan_prior_inversion_runs_end_to_end_and_caches_its_generator(compose_attack, cache_dir):
    before = set(cache_dir.glob("gan-*.pt"))  # the cache is shared with other tests
    cfg = compose_attack(TINY_GAN)
    metrics = run_attack(cfg)
    assert metrics["inversion/public_queries"] == 30  # the second half of the 60 test images, each labelled once
    assert all(0 <= metrics[f"inversion/{k}"] <= 1 for k in ("target_acc", "evaluator_acc", "report_judge_acc"))
    saved = torch.load(Path(cfg.paths.output_dir) / "reconstructions.pt", weights_only=True)
    assert saved["images"].shape == (10, 1, 28, 28) and 0 <= saved["images"].min() and saved["images"].max() <= 1
    (cached,) = set(cache_dir.glob("gan-*.pt")) - before
    again = run_attack(compose_attack(TINY_GAN))
    assert again["inversion/public_queries"] == 30  # the cached generator's own count
    assert again["inversion/target_acc"] == metrics["inversion/target_acc"]
    run_attack(compose_attack([*TINY_GAN, "seed=1"]))  # the attacker's seed trains its own generator
    assert len(set(cache_dir.glob("gan-*.pt")) - before) == 2 and cached.exists()


def test_only_the_codes_are_trained_and_pixel_projections_are_skipped_with_a_warning(caplog):
    from privacy_attacks.engine.priors import GaussianBlur

    generator = ConditionalGenerator((1, 28, 28), 10, latent_dim=4, width=8)
    objective = ClassInversion(LeNet5().eval().requires_grad_(False), torch.arange(10), LogitSimilarity())
    module = ReconstructionModule(
        objective,
        {"blur": GaussianBlur(0.5, 1)},
        None,
        steps=1,
        restarts=1,
        parameterisation=GeneratedImages(generator, torch.arange(10)),
    )
    assert [name for name, p in module.named_parameters() if p.requires_grad] == ["latents"]
    assert "GaussianBlur" in caplog.text and "skipped under a generative prior" in caplog.text


def test_grouped_gan_inversions_each_invert_through_their_own_seeds_generator(compose_attack, monkeypatch, caplog):
    from tests.conftest import run_as_group

    alone = [run_attack(compose_attack([*TINY_GAN, f"seed={seed}"])) for seed in (0, 1)]
    with caplog.at_level("INFO"):
        grouped = run_as_group({seed: compose_attack([*TINY_GAN, f"seed={seed}"]) for seed in (0, 1)}, monkeypatch)
    assert "jobs 0, 1 fitted as one batch" in caplog.text
    assert alone[0]["inversion/knn_pixel_dist"] != pytest.approx(alone[1]["inversion/knn_pixel_dist"], rel=1e-3)
    for seed, expected in enumerate(alone):
        for key in ("inversion/knn_pixel_dist", "inversion/ssim_class_mean", "inversion/target_confidence"):
            assert grouped[seed][key] == pytest.approx(expected[key], rel=1e-4, abs=1e-6), key
