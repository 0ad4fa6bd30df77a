"""The learned inversion network (Dosovitskiy & Brox 2016) and the guess prior / init it feeds."""

from __future__ import annotations

import copy
import json
import logging
import re
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from privacy_attacks import cache
from privacy_attacks.attacks.feature_inversion.attack import build_module, validate
from privacy_attacks.attacks.feature_inversion.inversion_network import (
    InversionNetwork,
    inversion_cache_path,
    layer_features,
    provision_inversion_network,
)
from privacy_attacks.engine.metrics import image_similarity
from privacy_attacks.errors import CheckpointError, ConfigError
from privacy_attacks.models import LeNet5
from tests.conftest import SMALL_TARGET, run_script

SETTINGS = {"epochs": 3, "batch_size": 32, "lr": 1e-2, "width": 16, "seed": 0}  # 24 steps: a high rate
IMAGES = {"data": "0123456789abcdef", "val_size": 5000, "split_seed": 0}  # names the attacker's training images


TRAINER = OmegaConf.create(
    {
        "_target_": "lightning.Trainer",
        "accelerator": "cpu",
        "devices": 1,
        "enable_progress_bar": False,
        "enable_model_summary": False,
    }
)


@pytest.mark.parametrize("layer", LeNet5.LAYERS)
def test_decoder_maps_every_layer_back_to_images_in_the_unit_range(layer):
    net = LeNet5().eval()
    features = net.features(torch.rand(5, 1, 28, 28))[layer]
    images = InversionNetwork(features[0].numel(), width=8)(features)
    assert images.shape == (5, 1, 28, 28) and 0 <= images.min() <= images.max() <= 1


@pytest.mark.parametrize("layer", ["conv2", "fc1"])
def test_residual_blocks_deepen_the_decoder_and_keep_its_output_range(layer):
    net = LeNet5().eval()
    features = net.features(torch.rand(5, 1, 28, 28))[layer]
    plain, deep = (InversionNetwork(features[0].numel(), width=8, blocks=b) for b in (0, 2))
    images = deep(features)
    assert images.shape == (5, 1, 28, 28) and 0 <= images.min() <= images.max() <= 1
    convolutions = [sum(isinstance(m, torch.nn.Conv2d) for m in d.modules()) for d in (plain, deep)]
    assert convolutions[1] == convolutions[0] + 2 * 2 * 3  # two blocks of two convolutions at each resolution


def test_the_plain_decoder_keeps_its_cache_key_and_blocks_get_their_own(tmp_path: Path):
    net = LeNet5().eval().requires_grad_(False)
    settings = {**SETTINGS, "epochs": 1, "train_images": 16}
    images = torch.rand(16, 1, 28, 28)
    plain = provision_inversion_network(
        net, "conv2", lambda: images, IMAGES, settings | {"blocks": 0}, TRAINER, tmp_path
    )
    assert plain.blocks == 0
    assert [p.name for p in tmp_path.glob("inversion-*.pt")] == [
        inversion_cache_path(tmp_path, net, "conv2", settings, IMAGES).name
    ]
    deep = provision_inversion_network(
        net, "conv2", lambda: images, IMAGES, settings | {"blocks": 1}, TRAINER, tmp_path
    )
    assert deep.blocks == 1 and len(list(tmp_path.glob("inversion-*.pt"))) == 2


def test_features_computed_once_in_chunks_equal_one_pass():
    net = LeNet5().eval()
    images = torch.rand(7, 1, 28, 28)
    with torch.no_grad():
        expected = net.features(images)["fc1"]
    torch.testing.assert_close(layer_features(net, "fc1", images, chunk=3), expected)


def test_decoder_training_lowers_the_error_and_is_cached(tmp_path: Path):
    torch.manual_seed(0)
    net = LeNet5().eval().requires_grad_(False)
    images = torch.zeros(256, 1, 28, 28)
    images[:, :, 8:20, 10:18] = torch.rand(256, 1, 1, 1)  # a block of one random brightness per image
    features = net.features(images)["conv2"]
    untrained = InversionNetwork(features[0].numel(), SETTINGS["width"])
    decoder = provision_inversion_network(
        net, "conv2", lambda: images, IMAGES, {**SETTINGS, "train_images": 256}, TRAINER, tmp_path
    )
    with torch.no_grad():
        before = (untrained(features) - images).pow(2).mean()
        after = (decoder(features) - images).pow(2).mean()
    assert after < 0.5 * before
    path = inversion_cache_path(tmp_path, net, "conv2", {**SETTINGS, "train_images": 256}, IMAGES)
    assert path.exists()

    def no_data():
        raise AssertionError("a cached decoder must not load the training images")

    cached = provision_inversion_network(
        net, "conv2", no_data, IMAGES, {**SETTINGS, "train_images": 256}, TRAINER, tmp_path
    )
    for a, b in zip(decoder.state_dict().values(), cached.state_dict().values()):
        torch.testing.assert_close(a, b)
    assert inversion_cache_path(tmp_path, net, "fc1", {**SETTINGS, "train_images": 256}, IMAGES) != path


def test_decoder_training_writes_its_epochs_to_the_log(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    """Its fit is the longest of a feature-inversion run (up to an hour for a large decoder): with the progress
    bar off (log files, joblib workers) its epochs still show, with the training error."""
    net = LeNet5().eval().requires_grad_(False)
    images = torch.rand(16, 1, 28, 28)
    settings = {**SETTINGS, "epochs": 2, "train_images": 16}
    with caplog.at_level(logging.INFO, logger="privacy_attacks.callbacks.epoch_log"):
        provision_inversion_network(net, "fc1", lambda: images, IMAGES, settings, TRAINER, tmp_path)
    lines = [m for m in caplog.messages if m.startswith("decoder of fc1: epoch")]
    assert lines and lines[-1].startswith("decoder of fc1: epoch 2/2, inversion/train_mse ")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["anchor_lambda=-1"], "anchor_lambda"),
        (["init=network", "inversion_network.epochs=0"], "inversion_network.epochs"),
        (
            ["anchor_lambda=1", "inversion_network.train_images=56000"],
            "55000 training images outside the validation split",
        ),
        (["init=network", "inversion_network.seed=abc"], "inversion_network.seed"),
        (["init=network", "inversion_network.blocks=-1"], "inversion_network.blocks"),
    ],
)
def test_bad_inversion_network_settings_are_refused_before_any_work(compose_attack, overrides, message):
    with pytest.raises(ConfigError, match=message):
        validate(compose_attack(["attack=feature_inversion", *overrides]))


@pytest.mark.slow
@pytest.mark.mnist
def test_real_small_run_with_the_learned_prior(tmp_path: Path, cache_dir: Path):
    args = [
        "attack=feature_inversion",
        "layer=conv2",
        "init=network",
        "anchor_lambda=1",
        "steps=5",
        "num_images=3",
        "inversion_network.train_images=512",
        "inversion_network.epochs=1",
        *SMALL_TARGET,
        "logger=none",
        f"hydra.run.dir={tmp_path / 'run'}",
        "+trainer.enable_progress_bar=false",
    ]
    result = run_script("attack.py", args, tmp_path, cache_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    saved = torch.load(tmp_path / "run" / "reconstructions.pt", weights_only=True)
    assert metrics["recon/psnr"] == pytest.approx(
        image_similarity(saved["images"], saved["originals"])["psnr"].mean().item(), rel=1e-5
    )
    assert metrics["recon/psnr"] != metrics["recon/psnr_network"]  # the optimisation moved away from the guess
    assert list(cache_dir.glob("inversion-*.pt"))


def test_feature_inversion_engine_starts_at_the_guess_and_anchors_to_it(compose_attack):
    cfg = compose_attack(["attack=feature_inversion", "layer=conv2", "init=network", "anchor_lambda=0.5", "restarts=2"])
    torch.manual_seed(0)
    net = LeNet5().eval().requires_grad_(False)
    originals, guess = torch.rand(3, 1, 28, 28), torch.rand(3, 1, 28, 28)
    module = build_module(cfg, net, net.features(originals)["conv2"], guess)
    torch.testing.assert_close(module.priors["anchor"].guess, guess)
    start = module.images.detach().view(2, 3, 1, 28, 28)
    for restart in start:  # each restart starts at the guess, up to the init's small noise
        assert (restart - guess).abs().mean() < 0.05
    assert module.priors["anchor"].penalty(module.images.detach()).max() < 0.01


def test_an_unusable_cached_network_is_a_clear_error(tmp_path: Path):
    net = LeNet5().eval().requires_grad_(False)
    images = torch.rand(64, 1, 28, 28)
    settings = {**SETTINGS, "epochs": 1, "train_images": 64}
    path = inversion_cache_path(tmp_path, net, "fc1", settings, IMAGES)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=f"{re.escape(str(path))} is corrupt or unreadable.*Delete"):
        provision_inversion_network(net, "fc1", lambda: images, IMAGES, settings, TRAINER, tmp_path)
    cache.save(path, {"decode.0.weight": torch.zeros(1)})  # readable, but another decoder's weights
    with pytest.raises(CheckpointError, match=f"{re.escape(str(path))} does not fit the inversion network.*Delete"):
        provision_inversion_network(net, "fc1", lambda: images, IMAGES, settings, TRAINER, tmp_path)


def test_a_loader_is_called_to_train_and_its_first_train_images_are_used(tmp_path: Path, caplog):
    net = LeNet5().eval().requires_grad_(False)
    calls = []

    def load():
        calls.append(1)
        return torch.rand(100, 1, 28, 28)

    settings = {**SETTINGS, "epochs": 1, "train_images": 40}
    with caplog.at_level("INFO", logger="privacy_attacks.attacks.feature_inversion.inversion_network"):
        provision_inversion_network(net, "fc1", load, IMAGES, settings, TRAINER, tmp_path)
    assert calls == [1]
    assert "on 40 images" in caplog.text
    assert inversion_cache_path(tmp_path, net, "fc1", settings, IMAGES).exists()


def test_the_decoder_key_names_the_targets_weights_not_its_file(tmp_path: Path):
    """A target retrained to other weights gets its own decoder; the same weights share one, whatever their file."""
    torch.manual_seed(0)
    net, retrained = LeNet5(), LeNet5()
    key = inversion_cache_path(tmp_path, net, "fc1", SETTINGS, IMAGES)
    assert inversion_cache_path(tmp_path, retrained, "fc1", SETTINGS, IMAGES) != key
    assert inversion_cache_path(tmp_path, copy.deepcopy(net), "fc1", SETTINGS, IMAGES) == key
    assert inversion_cache_path(tmp_path, net, "fc1", SETTINGS, {**IMAGES, "data": "other"}) != key
    assert inversion_cache_path(tmp_path, net, "fc1", SETTINGS, IMAGES, device="cuda") != key
