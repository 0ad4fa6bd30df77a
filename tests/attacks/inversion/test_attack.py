"""Output-based model inversion end to end: the judges, the headline command, bad input, runs."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from privacy_attacks.attacks.inversion.attack import build_module
from privacy_attacks.data.mnist import split_training_indices
from privacy_attacks.errors import ConfigError
from privacy_attacks.models import LeNet5
from privacy_attacks.pipelines import run_attack
from privacy_attacks.targets import provision_classifier, provision_target
from tests.conftest import SMALL_EVALUATOR, SMALL_TARGET, TINY_INVERSION, run_script


@pytest.fixture
def frozen_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return LeNet5().eval().requires_grad_(False)


def test_the_two_judges_differ_in_architecture_seed_and_training_images(compose_attack):
    cfg = compose_attack(["attack=inversion", "evaluator.members=27500", "judge.members=27500"])
    assert cfg.evaluator.net._target_ != cfg.judge.net._target_ and cfg.evaluator.seed != cfg.judge.seed
    images = [
        set(
            split_training_indices(cfg.data.val_size, cfg.data.split_seed, r.members, member_offset=r.member_offset)[
                "train"
            ].tolist()
        )
        for r in (cfg.evaluator, cfg.judge)
    ]
    assert len(images[0]) == len(images[1]) == 27_500 and not images[0] & images[1]


@pytest.mark.parametrize("value", [0.0, 1e-3, 1e-2])
def test_headline_command_reaches_the_module(compose_attack, frozen_net, value):
    cfg = compose_attack(["attack=inversion", f"tv_lambda={value}", "init=zeros", "loss=prob"])
    module = build_module(cfg, frozen_net, torch.arange(10))
    assert ("tv" in module.priors) == (value > 0)
    if value > 0:
        assert module.priors["tv"].weight == value
    assert isinstance(module.objective.similarity, instantiate(cfg.losses.prob).__class__)
    assert torch.equal(module.images.detach(), torch.zeros_like(module.images))


def test_the_border_weight_of_the_pixel_energy_prior_reaches_the_module(compose_attack, frozen_net):
    cfg = compose_attack(["attack=inversion", "l2_border=2", "l2_border_power=8"])
    prior = build_module(cfg, frozen_net, torch.arange(10)).priors["l2"]
    assert (prior.weight, prior.border, prior.border_power) == (100.0, 2.0, 8.0)
    plain = build_module(compose_attack(["attack=inversion"]), frozen_net, torch.arange(10)).priors["l2"]
    assert plain.border == 0 and torch.equal(plain.pixel_weights(28, 28), torch.ones(28, 28))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("tv_lambda=-1", "tv_lambda=-1"),
        ("l2_lambda=-0.5", "l2_lambda"),
        ("init=gaussian", "noise, uniform, zeros, constant, mean"),
        ("loss=hinge", "ce, prob, logit, margin, mse"),
        ("optimizer=rmsprop", "adam, sgd, lbfgs"),
        ("steps=0", "steps=0"),
        ("restarts=0", "restarts=0"),
        ("samples_per_class=0", "samples_per_class=0"),
        ("augment_degrees=-5", "augment_degrees"),
        ("augment_scale=1.5", r"augment_scale=1.5 is not allowed: it must be in \[0, 1\)"),
        ("l2_border=-1", "priors.l2: l2_border=-1 is not allowed"),
        ("l2_border_power=0", "priors.l2: l2_border_power=0 is not allowed"),
        ("selection=best", "loss, augmented"),
        ("selection_views=0", "selection_views=0"),
        ("weight_noise=-0.1", "weight_noise=-0.1"),
        ("feature_dropout=1.0", "feature_dropout=1.0"),
        ("judge_seeds=3", "judge_seeds must be a list"),
        ("judge_seeds=[three]", "judge_seeds='three' is not allowed"),
        ("judge_seeds=[3,3]", "distinct seeds other than the reporting judge's own"),
        ("judge_seeds=[2]", "distinct seeds other than the reporting judge's own"),
    ],
)
def test_bad_input_fails_before_any_work(compose_attack, tmp_path, override, message):
    cfg = compose_attack(["attack=inversion", override])
    with open_dict(cfg):
        cfg.paths.cache_dir = str(tmp_path / "empty_cache")
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        run_attack(cfg)
    assert not (tmp_path / "empty_cache").exists()  # nothing trained or provisioned


@pytest.mark.mnist
def test_inversion_run_writes_artefacts(compose_attack):
    cfg = compose_attack(["attack=inversion", "steps=4", "restarts=1"])
    target = provision_target(cfg)
    before = {k: v.clone() for k, v in target.net.state_dict().items()}
    metrics = run_attack(cfg)
    out = Path(cfg.paths.output_dir)
    for key in (
        "target_acc",
        "target_confidence",
        "evaluator_acc",
        "ssim_class_mean",
        "psnr_class_mean",
        "mse_class_mean",
        "ssim_nearest_train",
        "report_judge_top5_acc",
        "knn_pixel_dist",
        "knn_judge_dist",
    ):
        assert f"inversion/{key}" in metrics
    saved = torch.load(out / "reconstructions.pt", weights_only=True)
    judge = provision_classifier(cfg.judge, cfg.data, cfg.trainer, cfg.paths.cache_dir, "judge").net
    with torch.no_grad():
        recognised = (judge(saved["images"]).argmax(dim=1) == saved["labels"]).float().mean().item()
    assert metrics["inversion/report_judge_acc"] == pytest.approx(recognised)
    assert saved["images"].shape == (10, 1, 28, 28) and saved["images"].dtype == torch.float32
    assert 0.0 <= saved["images"].min() and saved["images"].max() <= 1.0
    assert saved["class_names"] == [str(digit) for digit in range(10)]  # the sweep's comparison figure titles by them
    assert torch.equal(saved["labels"], torch.arange(10))
    assert (out / "reconstructions.png").stat().st_size > 0 and (out / "metrics.json").exists()
    after = provision_target(cfg).net.state_dict()
    assert all(torch.equal(before[k], v) for k, v in after.items())


@pytest.mark.mnist
@pytest.mark.slow
def test_multirun_subprocess_writes_jobs_and_summary(tmp_path, cache_dir):
    sweep = tmp_path / "sweep"
    args = [
        "-m",
        "attack=inversion",
        "tv_lambda=0,1e-2",
        "steps=3",
        "restarts=1",
        *SMALL_TARGET,
        *SMALL_EVALUATOR,
        "data.download=false",
        "+trainer.enable_progress_bar=false",
        f"hydra.sweep.dir={sweep}",
    ]
    done = run_script("attack.py", args, tmp_path, cache_dir)
    assert done.returncode == 0, done.stderr[-3000:]
    for job in ("0", "1"):
        for name in ("metrics.json", "reconstructions.pt", "reconstructions.png"):
            assert (sweep / job / name).exists(), f"{job}/{name}"
        assert list((sweep / job / "tensorboard").glob("events.out.tfevents.*"))
    summary = (sweep / "summary.csv").read_text().splitlines()
    assert len(summary) == 3 and "tv_lambda" in summary[0] and "inversion/evaluator_acc" in summary[0]
    assert (sweep / "comparison.png").stat().st_size > 0
    assert "Best job by inversion/evaluator_acc" in done.stdout


@pytest.mark.mnist
def test_several_samples_per_class_are_all_scored(compose_attack):
    cfg = compose_attack(
        ["attack=inversion", "steps=2", "restarts=1", "samples_per_class=3", "init=noise", "logger=tensorboard"]
    )
    metrics = run_attack(cfg)
    (events,) = Path(cfg.paths.output_dir).rglob("events.out.tfevents.*")
    accumulator = EventAccumulator(str(events), size_guidance={"images": 0})
    accumulator.Reload()
    (grid,) = accumulator.Images("inversion/reconstructions")  # a row of the 10 classes per sample, then the means
    assert (grid.height, grid.width) == (2 + 4 * 30, 2 + 10 * 30) and grid.step == 2
    assert [event.step for event in accumulator.Scalars("inversion/loss")] == [0, 1]  # the first and the last step
    saved = torch.load(Path(cfg.paths.output_dir) / "reconstructions.pt", weights_only=True)
    assert saved["images"].shape == (30, 1, 28, 28)
    assert torch.equal(saved["labels"], torch.arange(10).repeat_interleave(3))
    recognised = metrics["inversion/report_judge_acc"] * 30  # a count over all 30 reconstructions
    assert recognised == pytest.approx(round(recognised))
    assert metrics["inversion/report_judge_top5_acc"] >= metrics["inversion/report_judge_acc"]
    assert metrics["inversion/knn_pixel_dist"] > 0 and metrics["inversion/knn_judge_dist"] > 0


def test_the_tuning_panel_trains_only_on_the_tuning_judges_half(compose_attack):
    from privacy_attacks.attacks.inversion.attack import check_panel

    cfg = compose_attack(["attack=inversion", "panel=tuning", "evaluator.members=27500", "judge.members=27500"])
    assert sorted(cfg.panel) == ["allconv", "allconv_seed3", "cnn", "mlp", "resnet"]
    assert len({(r.net._target_, r.seed) for r in cfg.panel.values()}) == 5  # four architectures, two seeds of one
    for recipe in cfg.panel.values():
        assert (recipe.members, recipe.member_offset) == (cfg.evaluator.members, cfg.evaluator.member_offset)
    check_panel(cfg.panel, cfg.judge)  # disjoint from the reporting judge's half
    # The MLP of the panel is the tuning judge's recipe with another net: one cached model for both.
    alone = compose_attack(
        ["attack=inversion", "net@evaluator.net=mlp", "evaluator.members=27500", "evaluator.max_epochs=2"]
    )
    assert OmegaConf.to_container(alone.evaluator, resolve=True) == OmegaConf.to_container(cfg.panel.mlp, resolve=True)


def test_a_panel_judge_on_the_reporting_judges_images_fails_before_any_work(compose_attack, tmp_path):
    cfg = compose_attack(["attack=inversion", "panel=tuning", "panel.allconv.member_offset=27500"])
    with open_dict(cfg):
        cfg.paths.cache_dir = str(tmp_path / "empty_cache")
    with pytest.raises(ConfigError, match="panel.allconv trains on images the reporting judge trains on"):
        run_attack(cfg)
    assert not (tmp_path / "empty_cache").exists()


def test_a_run_with_the_panel_scores_with_each_panel_judge(compose_attack, caplog):
    cfg = compose_attack([*TINY_INVERSION, "panel=tuning", "steps=3", "restarts=1"])
    with caplog.at_level("INFO"):
        metrics = run_attack(cfg)
    names = sorted(cfg.panel)
    accuracies = [metrics[f"inversion/panel_{name}_acc"] for name in names]
    assert metrics["inversion/panel_acc"] == pytest.approx(sum(accuracies) / len(names))
    saved = torch.load(Path(cfg.paths.output_dir) / "reconstructions.pt", weights_only=True)
    resnet = provision_classifier(cfg.panel.resnet, cfg.data, cfg.trainer, cfg.paths.cache_dir, "evaluator").net
    with torch.no_grad():
        recognised = (resnet(saved["images"]).argmax(dim=1) == saved["labels"]).float().mean().item()
    assert metrics["inversion/panel_resnet_acc"] == pytest.approx(recognised)
    assert "tuning panel acc" in caplog.text and "reporting judge acc" not in caplog.text  # a tuning run's line


def test_more_draws_of_the_reporting_judge_are_scored_beside_it(compose_attack):
    cfg = compose_attack([*TINY_INVERSION, "judge_seeds=[3,4]", "steps=3", "restarts=1"])
    metrics = run_attack(cfg)
    saved = torch.load(Path(cfg.paths.output_dir) / "reconstructions.pt", weights_only=True)
    readings = [metrics["inversion/report_judge_acc"]]
    for seed in (3, 4):
        recipe = cfg.judge.copy()
        recipe.seed = seed  # the reporting judge's recipe and half, another seed
        draw = provision_classifier(recipe, cfg.data, cfg.trainer, cfg.paths.cache_dir, "judge").net
        with torch.no_grad():
            recognised = (draw(saved["images"]).argmax(dim=1) == saved["labels"]).float().mean().item()
        assert metrics[f"inversion/report_judge_seed{seed}_acc"] == pytest.approx(recognised)
        readings.append(recognised)
    assert metrics["inversion/report_judges_acc"] == pytest.approx(sum(readings) / 3)
    alone = run_attack(compose_attack([*TINY_INVERSION, "steps=3", "restarts=1"]))
    assert not any(key.startswith("inversion/report_judges") for key in alone)  # off by default


def test_judges_larger_than_a_small_pool_are_named_before_any_work(compose_attack, tmp_path):
    """The judges' default windows are sized for MNIST: on a smaller pool the error names the key to set, before the
    target trains."""
    small = [key for key in TINY_INVERSION if not key.startswith(("evaluator.", "judge."))]
    cfg = compose_attack(small)
    with open_dict(cfg):
        cfg.paths.cache_dir = str(tmp_path / "empty_cache")
    with pytest.raises(
        ConfigError, match=r"evaluator\.members=\d+ is not allowed: it must be an integer between 1 and 240"
    ):
        run_attack(cfg)
    assert not (tmp_path / "empty_cache").exists()


def test_a_class_without_training_images_is_left_out_of_the_class_mean_and_nearest_image_metrics():
    """A class none of the target's training images has (a tiny class of one's own data) has no mean image: its
    reconstructions are left out of the metrics that compare with training images, which stay finite."""
    from privacy_attacks.attacks.inversion.attack import score
    from privacy_attacks.engine.metrics import class_means

    generator = torch.Generator().manual_seed(0)
    pool, pool_labels = torch.rand(6, 1, 12, 12, generator=generator), torch.tensor([0, 0, 1, 1, 0, 1])
    means = class_means(pool, pool_labels, 3)
    assert means[2].isnan().all() and not means[:2].isnan().any()
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(144, 3))
    images, labels = torch.rand(3, 1, 12, 12, generator=generator), torch.tensor([0, 1, 2])
    metrics, _ = score(images, labels, net, net, means, pool, pool_labels)
    alone, _ = score(images[:2], labels[:2], net, net, means, pool, pool_labels)
    for name in ("ssim_class_mean", "psnr_class_mean", "mse_class_mean", "ssim_nearest_train"):
        assert metrics[f"inversion/{name}"] == pytest.approx(alone[f"inversion/{name}"]), name
    assert all(math.isfinite(value) for value in metrics.values())


@pytest.mark.parametrize("data", ["mnist", "fashion_mnist", "synthetic", "cifar10"])
def test_the_judges_take_the_two_halves_of_any_datasets_training_pool(data):
    from privacy_attacks.attacks.inversion.attack import validate
    from privacy_attacks.data.identity import training_set_size
    from tests.conftest import attack_config

    overrides = [f"data={data}"] + (["data.source.root=/nowhere"] if data == "cifar10" else [])
    cfg = attack_config("inversion", overrides)
    half = (training_set_size(cfg.data) - cfg.data.val_size) // 2
    assert cfg.evaluator.members == cfg.judge.members == cfg.judge.member_offset == half
    assert cfg.evaluator.member_offset == 0
    if data == "mnist":
        assert half == 27_500  # the halves the cached judges were trained on
    if data == "synthetic":
        validate(cfg)  # both windows fit: no key to resize by hand


def test_a_pool_share_out_of_range_is_named():
    from omegaconf.errors import InterpolationResolutionError

    from tests.conftest import attack_config

    cfg = attack_config("inversion", ["evaluator.members=${pool_share:1.5}"])
    with pytest.raises(InterpolationResolutionError, match=r"pool_share:1.5 is not allowed"):
        _ = cfg.evaluator.members  # (the command line prints this one line, as every config error)


def test_the_judges_top5_accuracy_is_left_out_where_five_classes_are_all_of_them():
    from privacy_attacks.attacks.inversion.attack import judge_metrics

    images = torch.rand(6, 1, 4, 4)
    for classes, present in ((3, False), (5, False), (10, True)):
        judge = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, classes))
        metrics = judge_metrics(images, torch.arange(6) % classes, judge)
        assert ("inversion/report_judge_top5_acc" in metrics) == present and "inversion/report_judge_acc" in metrics
