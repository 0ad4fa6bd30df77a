"""The learned refinement stages after the inversion network (a learned gradient scheme, Adler & Öktem 2017)."""

from __future__ import annotations

import json
import logging
import re
from functools import partial
from pathlib import Path

import pytest
import torch

from privacy_attacks import cache
from privacy_attacks.attacks.feature_inversion.attack import validate
from privacy_attacks.attacks.feature_inversion.inversion_network import (
    InversionNetwork,
    inversion_cache_path,
    provision_inversion_network,
)
from privacy_attacks.attacks.feature_inversion.matching import FeatureMatching
from privacy_attacks.attacks.feature_inversion.unrolled import (
    UnrolledRefiner,
    feature_loss_gradient,
    provision_unrolled_refiner,
    unrolled_cache_path,
)
from privacy_attacks.errors import CheckpointError, ConfigError
from privacy_attacks.models import LeNet5
from privacy_attacks.models.taps import layer_output
from tests.attacks.feature_inversion.test_inversion_network import IMAGES, SETTINGS, TRAINER
from tests.conftest import SMALL_TARGET, run_script

STAGES = {"steps": 2, "width": 8, "epochs": 4, "lr": 1e-2, "batch_size": 32, "seed": 0}


def blocks(n: int) -> torch.Tensor:
    """Images of a block of one random brightness each: (n, 1, 28, 28)."""
    images = torch.zeros(n, 1, 28, 28)
    images[:, :, 8:20, 10:18] = torch.rand(n, 1, 1, 1)
    return images


def test_an_untrained_refiner_returns_the_decoders_guess():
    net = LeNet5().eval().requires_grad_(False)
    network = partial(layer_output, net, "conv2")
    images, guess = torch.rand(3, 1, 28, 28), torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        out = UnrolledRefiner(steps=3, width=4)(guess, network(images), network, InversionNetwork(400, width=4))
    torch.testing.assert_close(out, guess)


@pytest.mark.parametrize("layer", ["conv2", "fc1"])
def test_the_stages_read_the_feature_objectives_gradient_at_unit_rms_and_its_log(layer):
    torch.manual_seed(0)
    net = LeNet5().eval().requires_grad_(False)
    originals, images = torch.rand(4, 1, 28, 28), torch.rand(4, 1, 28, 28)
    features = net.features(originals)[layer]
    objective = FeatureMatching(net, layer, features)
    x = images.clone().requires_grad_(True)
    loss = objective(x)
    (expected,) = torch.autograd.grad(loss.sum(), x)
    with torch.no_grad():  # the stages run under no_grad at attack time
        gradient, log_loss = feature_loss_gradient(partial(layer_output, net, layer), images, features)
    assert not gradient.requires_grad and not log_loss.requires_grad
    torch.testing.assert_close(gradient.flatten(1).pow(2).mean(1), torch.ones(4))
    scale = expected.flatten(1).pow(2).mean(1).sqrt().view(-1, 1, 1, 1)
    torch.testing.assert_close(gradient, expected / scale)
    torch.testing.assert_close(log_loss.flatten(), loss.detach().log())


def test_training_lowers_the_decoders_error_and_is_cached_per_decoder(tmp_path: Path):
    torch.manual_seed(0)
    net = LeNet5().eval().requires_grad_(False)
    images = blocks(256)
    network = partial(layer_output, net, "conv2")
    features = network(images)
    settings = {**SETTINGS, "epochs": 1, "train_images": 256}  # a rough decoder: room for the stages
    decoder = provision_inversion_network(net, "conv2", lambda: images, IMAGES, settings, TRAINER, tmp_path)
    decoder_path = inversion_cache_path(tmp_path, net, "conv2", settings, IMAGES)
    refiner = provision_unrolled_refiner(
        network, decoder, decoder_path, lambda: (features, images), STAGES, TRAINER, tmp_path
    )
    with torch.no_grad():
        guess = decoder(features)
        refined = refiner(guess, features, network, decoder)
    before, after = (guess - images).pow(2).mean(), (refined - images).pow(2).mean()
    assert after < 0.8 * before
    assert 0 <= refined.min() <= refined.max() <= 1
    path = unrolled_cache_path(tmp_path, decoder_path, STAGES, "cpu")
    assert path.exists()

    def no_data():
        raise AssertionError("cached stages must not load the training images")

    cached = provision_unrolled_refiner(network, decoder, decoder_path, no_data, STAGES, TRAINER, tmp_path)
    for a, b in zip(refiner.state_dict().values(), cached.state_dict().values()):
        torch.testing.assert_close(a, b)
    other_decoder = inversion_cache_path(tmp_path, net, "conv2", {**settings, "width": 32}, IMAGES)
    assert unrolled_cache_path(tmp_path, other_decoder, STAGES, "cpu") != path
    assert unrolled_cache_path(tmp_path, decoder_path, {**STAGES, "steps": 3}, "cpu") != path
    assert unrolled_cache_path(tmp_path, decoder_path, STAGES, "cuda") != path


def test_the_stages_training_writes_its_epochs_to_the_log(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    net = LeNet5().eval().requires_grad_(False)
    images = torch.rand(16, 1, 28, 28)
    network = partial(layer_output, net, "fc1")
    decoder = provision_inversion_network(
        net, "fc1", lambda: images, IMAGES, {**SETTINGS, "epochs": 1, "train_images": 16}, TRAINER, tmp_path
    )
    with caplog.at_level(logging.INFO, logger="privacy_attacks.callbacks.epoch_log"):
        provision_unrolled_refiner(
            network,
            decoder,
            tmp_path / "inversion-x.pt",
            lambda: (network(images), images),
            {**STAGES, "epochs": 2},
            TRAINER,
            tmp_path,
        )
    lines = [m for m in caplog.messages if m.startswith("refinement stages: epoch")]
    assert lines and lines[-1].startswith("refinement stages: epoch 2/2, inversion/unrolled_mse ")


def test_unusable_cached_stages_are_a_clear_error(tmp_path: Path):
    net = LeNet5().eval().requires_grad_(False)
    network = partial(layer_output, net, "fc1")
    decoder = provision_inversion_network(
        net,
        "fc1",
        lambda: torch.rand(8, 1, 28, 28),
        IMAGES,
        {**SETTINGS, "epochs": 1, "train_images": 8},
        TRAINER,
        tmp_path,
    )
    path = unrolled_cache_path(tmp_path, tmp_path / "inversion-x.pt", STAGES, "cpu")
    cache.save(path, {"stages.0.0.weight": torch.zeros(1)})

    def provision():
        provision_unrolled_refiner(network, decoder, tmp_path / "inversion-x.pt", None, STAGES, TRAINER, tmp_path)

    with pytest.raises(CheckpointError, match=f"{re.escape(str(path))} does not fit the refinement stages.*Delete"):
        provision()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["inversion_network.unrolled.steps=-1"], "inversion_network.unrolled.steps"),
        (["inversion_network.unrolled.steps=2", "inversion_network.unrolled.width=0"], "unrolled.width"),
        (["inversion_network.unrolled.steps=2", "inversion_network.unrolled.epochs=1.5"], "unrolled.epochs"),
        (["inversion_network.unrolled.steps=2", "inversion_network.unrolled.lr=0"], "unrolled.lr"),
    ],
)
def test_bad_stage_settings_are_refused_before_any_work(compose_attack, overrides, message):
    with pytest.raises(ConfigError, match=message):
        validate(compose_attack(["attack=feature_inversion", "layer=conv2", *overrides]))


@pytest.mark.slow
@pytest.mark.mnist
def test_real_small_run_with_refinement_stages(tmp_path: Path, cache_dir: Path):
    args = [
        "attack=feature_inversion",
        "layer=conv2",
        "steps=5",
        "num_images=3",
        "inversion_network.train_images=256",
        "inversion_network.epochs=1",
        "inversion_network.unrolled.steps=2",
        "inversion_network.unrolled.width=8",
        "inversion_network.unrolled.epochs=1",
        *SMALL_TARGET,
        "logger=none",
        f"hydra.run.dir={tmp_path / 'run'}",
        "+trainer.enable_progress_bar=false",
    ]
    result = run_script("attack.py", args, tmp_path, cache_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert {"recon/psnr_network", "recon/psnr_decoder"} <= set(metrics)
    assert metrics["recon/psnr_network"] != metrics["recon/psnr_decoder"]  # the stages moved the guess
    assert list(cache_dir.glob("unrolled-*.pt")) and list(cache_dir.glob("inversion-*.pt"))
