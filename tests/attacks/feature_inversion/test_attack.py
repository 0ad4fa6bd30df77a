"""Feature inversion end to end: the headline sweep, bad input, a real small run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from privacy_attacks.attacks.feature_inversion.attack import validate
from privacy_attacks.engine.metrics import image_similarity
from privacy_attacks.errors import ConfigError
from privacy_attacks.models import LeNet5
from tests.conftest import SMALL_TARGET, run_script


def test_headline_sweep_composes(compose_attack):
    for layer in LeNet5.LAYERS:
        cfg = compose_attack(["attack=feature_inversion", f"layer={layer}"])
        validate(cfg)
        assert cfg.layer == layer


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["layer=conv9"], "conv1, conv2, fc1, fc2, logits"),
        (["num_images=500"], "private pool"),
        (["tv_lambda=-1"], "tv_lambda"),
        (["init=foo"], "noise"),
        (["steps=0"], "steps"),
    ],
)
def test_bad_input_is_refused_before_any_work(compose_attack, overrides, message):
    with pytest.raises(ConfigError, match=message):
        validate(compose_attack(["attack=feature_inversion", *overrides]))


@pytest.mark.slow
@pytest.mark.mnist
def test_real_small_multirun_subprocess(tmp_path: Path, cache_dir: Path):
    result = run_script(
        "attack.py",
        [
            "-m",
            "attack=feature_inversion",
            "layer=conv1,fc1",
            "steps=5",
            "num_images=3",
            *SMALL_TARGET,
            "inversion_network.train_images=512",
            "inversion_network.epochs=1",  # fc1's learned prior, trained small
            "logger=none",
            "hydra.sweep.dir=" + str(tmp_path / "sweep"),
            "+trainer.enable_progress_bar=false",
        ],
        tmp_path,
        cache_dir,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = tmp_path / "sweep"
    for job in ("0", "1"):
        metrics = json.loads((sweep / job / "metrics.json").read_text())
        saved = torch.load(sweep / job / "reconstructions.pt", weights_only=True)
        assert saved["images"].shape == (3, 1, 28, 28) and 0 <= saved["images"].min() <= saved["images"].max() <= 1
        scores = image_similarity(saved["images"], saved["originals"])  # the metrics score what was saved
        assert metrics["recon/psnr"] == pytest.approx(scores["psnr"].mean().item(), rel=1e-5)
        assert metrics["recon/mse"] == pytest.approx(scores["mse"].mean().item(), rel=1e-5)
        assert (sweep / job / "reconstructions.png").exists()
        assert ("recon/psnr_network" in metrics) == (job == "1")  # fc1 uses the learned inversion network by default
    assert (sweep / "summary.csv").exists() and (sweep / "quality.png").exists()
