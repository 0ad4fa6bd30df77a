"""The malicious server's imprint block (Robbing the Fed): exact recovery of images alone in their bin, mixtures of
the rest, thresholds from public images, and a whole run with every image scored."""

from __future__ import annotations

import pytest
import torch
from omegaconf import open_dict

from privacy_attacks.attacks.gradient_inversion.client import SimulatedClient
from privacy_attacks.attacks.gradient_inversion.imprint import (
    ImprintedModel,
    brightness_thresholds,
    recover_from_imprint,
)
from privacy_attacks.engine.metrics import PSNR_CAP, image_similarity
from privacy_attacks.errors import ConfigError
from privacy_attacks.models import LeNet5
from tests.attacks.gradient_inversion.test_attack import TINY_COLOUR

SHAPE = (1, 28, 28)


def _batch(brightness: list[float]) -> torch.Tensor:
    """Images of the given mean brightness, with structure (not flat)."""
    torch.manual_seed(0)
    images = torch.rand(len(brightness), *SHAPE)
    images = images / images.flatten(1).mean(dim=1).view(-1, 1, 1, 1)
    return (images * torch.tensor(brightness).view(-1, 1, 1, 1)).clamp(0, 1)


def _recover(images: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    torch.manual_seed(1)
    model = ImprintedModel(LeNet5(), SHAPE, thresholds).eval().requires_grad_(False)
    gradient = SimulatedClient(model, images, torch.arange(len(images)) % 10).shared_gradient()
    return recover_from_imprint(*model.imprint_gradients(gradient), len(images), SHAPE)


def test_images_alone_in_their_bin_come_out_exactly():
    images = _batch([0.12, 0.22, 0.32, 0.42])
    thresholds = torch.tensor([0.1, 0.2, 0.3, 0.4])  # one image in each bin, the last above the last threshold
    recovered = _recover(images, thresholds)
    for image in images:
        best = image_similarity(recovered, image.expand_as(recovered))["psnr"].max()
        assert best >= 60
    assert image_similarity(images[:1], images[:1])["psnr"].item() == PSNR_CAP


def test_images_sharing_a_bin_come_out_mixed_and_the_rest_exactly():
    images = _batch([0.12, 0.13, 0.32])
    recovered = _recover(images, torch.tensor([0.1, 0.2, 0.3]))
    psnr = torch.stack([image_similarity(recovered, image.expand_as(recovered))["psnr"].max() for image in images])
    assert psnr[2] >= 60 and min(psnr[0], psnr[1]) < 30  # the shared bin gives one weighted mean of its two
    assert (recovered != 0).flatten(1).any(dim=1).sum() == 2  # two bins hold images: the third reconstruction is blank


def test_thresholds_are_ascending_quantiles_of_the_public_images_brightness():
    public = _batch([0.1 * (i % 5 + 1) for i in range(50)])
    thresholds = brightness_thresholds(public, 4)
    assert thresholds.shape == (4,) and (thresholds.diff() >= 0).all()
    assert thresholds.min() >= 0.1 - 1e-6 and thresholds.max() <= 0.5 + 1e-6


def test_the_imprint_method_scores_every_image_and_claims_no_labels(compose_attack):
    from privacy_attacks.pipelines import run_attack

    cfg = compose_attack([*TINY_COLOUR, "method=imprint", "batch_size=4", "num_batches=2", "methods.imprint.bins=64"])
    metrics = run_attack(cfg)
    assert 0 <= metrics["recon/recovered_fraction"] <= 1 and "recon/label_acc" not in metrics
    assert metrics["recon/psnr"] <= PSNR_CAP


def test_bad_imprint_settings_stop_before_any_work(compose_attack):
    from privacy_attacks.attacks.gradient_inversion.attack import validate

    cfg = compose_attack([*TINY_COLOUR, "method=imprint", "methods.imprint.bins=0"])
    with pytest.raises(ConfigError, match="methods.imprint.bins=0"):
        validate(cfg)
    with open_dict(cfg):
        cfg.methods.imprint.bins = 8
        cfg.methods.imprint.threat = "rogue"
    with pytest.raises(ConfigError, match="honest_server, malicious_server"):
        validate(cfg)
