"""Output-based model inversion and the reconstruction engine it runs on."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import open_dict

from privacy_attacks.attacks.reconstruction import ReconstructionModule, fit_reconstruction
from privacy_attacks.attacks.reconstruction.inits import ConstantInit, NoiseInit
from privacy_attacks.attacks.reconstruction.inversion import build_module
from privacy_attacks.attacks.reconstruction.objectives import ClassInversion, CrossEntropySimilarity
from privacy_attacks.attacks.reconstruction.priors import GaussianBlur, Jitter, PixelEnergy, TotalVariation
from privacy_attacks.data.mnist import split_training_indices
from privacy_attacks.errors import ConfigError
from privacy_attacks.models import LeNet5
from privacy_attacks.pipelines import run_attack
from privacy_attacks.targets import provision_classifier, provision_target
from tests.conftest import SMALL_EVALUATOR, SMALL_TARGET, run_script

TRAINER = {"accelerator": "cpu", "devices": 1, "enable_progress_bar": False}
LOSSES = ["ce", "prob", "logit", "margin", "mse"]
INITS = ["noise", "uniform", "zeros", "constant"]  # "mean" needs MNIST: tested below


@pytest.fixture
def frozen_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return LeNet5().eval().requires_grad_(False)


def engine(net, steps=5, restarts=2, similarity=None, init=None, optimizer=None, priors=None):
    objective = ClassInversion(net, torch.arange(10), similarity or CrossEntropySimilarity())
    priors = (
        {"tv": TotalVariation(1e-2), "l2": PixelEnergy(0.1), "jitter": Jitter(1), "blur": GaussianBlur(0.5, 2)}
        if priors is None
        else priors
    )
    return ReconstructionModule(
        objective, priors, init or NoiseInit(), optimizer or partial(torch.optim.Adam, lr=0.05), steps, restarts
    )


def mean_loss(module: ReconstructionModule) -> float:
    with torch.no_grad():
        return module()[0].mean().item()


def test_target_weights_bit_identical_and_no_gradients(frozen_net):
    before = {k: v.clone() for k, v in frozen_net.state_dict().items()}
    fit_reconstruction(engine(frozen_net), TRAINER)
    assert all(torch.equal(before[k], v) for k, v in frozen_net.state_dict().items())
    assert all(p.grad is None and not p.requires_grad for p in frozen_net.parameters())
    assert not frozen_net.training


@pytest.mark.parametrize("optimizer", ["adam", "sgd", "lbfgs"])
def test_images_stay_in_unit_range_and_loss_decreases(frozen_net, optimizer):
    factories = {
        "adam": partial(torch.optim.Adam, lr=0.1),
        "sgd": partial(torch.optim.SGD, lr=1.0, momentum=0.9),
        "lbfgs": partial(torch.optim.LBFGS, lr=1.0, max_iter=1, line_search_fn="strong_wolfe"),
    }
    module = engine(frozen_net, steps=8, optimizer=factories[optimizer], priors={"tv": TotalVariation(1e-2)})
    start = mean_loss(module)
    fit_reconstruction(module, TRAINER)
    assert 0.0 <= module.images.min() and module.images.max() <= 1.0
    images, losses = module.reconstructions()
    assert images.shape == (10, 1, 28, 28) and 0.0 <= images.min() and images.max() <= 1.0
    assert losses.mean().item() < start
    assert mean_loss(module) < start


def test_best_iterate_is_kept_per_image(frozen_net):
    module = engine(frozen_net, steps=6, restarts=3)
    fit_reconstruction(module, TRAINER)
    images, losses = module.reconstructions()
    all_images, all_losses = module.all_reconstructions()
    assert all_images.shape == (3, 10, 1, 28, 28)
    assert torch.equal(losses, all_losses.min(dim=0).values)
    # Without random priors, the kept loss is the loss of the kept image.
    plain = ClassInversion(frozen_net, torch.arange(10), CrossEntropySimilarity())
    best_plain = engine(frozen_net, steps=6, restarts=3, priors={"tv": TotalVariation(1e-2), "l2": PixelEnergy(0.1)})
    fit_reconstruction(best_plain, TRAINER)
    images, losses = best_plain.reconstructions()
    with torch.no_grad():
        recomputed = (
            plain(images) + 1e-2 * TotalVariation(1e-2).penalty(images) + 0.1 * PixelEnergy(0.1).penalty(images)
        )
    assert torch.allclose(losses, recomputed, atol=1e-5)


def test_restarts_from_one_black_image_still_differ_through_per_image_jitter(frozen_net):
    module = engine(frozen_net, steps=5, restarts=3, init=ConstantInit(0.0), priors={"jitter": Jitter(2)})
    fit_reconstruction(module, TRAINER)
    images, _ = module.all_reconstructions()  # (3, 10, 1, 28, 28)
    assert not torch.equal(images[0], images[1]) and not torch.equal(images[1], images[2])


def test_jitter_moves_each_image_by_its_own_offset():
    jitter = Jitter(2)
    jitter.use_generator(torch.Generator().manual_seed(0))
    images = torch.zeros(64, 1, 28, 28)
    images[:, :, 14, 14] = 1.0
    moved = jitter.transform(images)
    positions = {tuple(torch.nonzero(m[0]).flatten().tolist()) for m in moved}
    assert len(positions) > 5 and all(12 <= r <= 16 and 12 <= c <= 16 for r, c in positions)
    assert torch.equal(moved.sum(dim=(1, 2, 3)), images.sum(dim=(1, 2, 3)))  # a translation: nothing lost


def test_the_best_restart_is_chosen_by_the_attacks_own_loss(frozen_net):
    module = engine(frozen_net, steps=4, restarts=3, priors={"tv": TotalVariation(1e-2)})
    fit_reconstruction(module, TRAINER)
    all_images, all_losses = module.all_reconstructions()
    module.best_loss = torch.tensor([[5.0] * 10, [1.0] * 10, [3.0] * 10]).flatten()  # restart 1 is best everywhere
    images, losses = module.reconstructions()
    assert torch.equal(images, all_images[1]) and torch.equal(losses, torch.ones(10))


def test_same_seed_same_reconstruction_whatever_the_global_rng(frozen_net):
    results = []
    for global_seed in (0, 1234):
        torch.manual_seed(global_seed)
        module = engine(frozen_net, steps=4, restarts=2)
        fit_reconstruction(module, TRAINER)
        results.append(module.reconstructions()[0])
    assert torch.equal(results[0], results[1])


def test_objective_parameters_are_optimised_with_the_images(frozen_net):
    class WithTemperature(ClassInversion):
        def __init__(self, net):
            super().__init__(net, torch.arange(10), CrossEntropySimilarity())
            self.scale = torch.nn.Parameter(torch.ones(()))

        def forward(self, images):
            return super().forward(images) * self.scale

    objective = WithTemperature(frozen_net)
    module = ReconstructionModule(objective, {}, NoiseInit(), partial(torch.optim.Adam, lr=0.05), steps=3)
    fit_reconstruction(module, TRAINER)
    assert objective.scale.item() != 1.0
    assert all(p.grad is None for p in frozen_net.parameters())


@pytest.mark.parametrize("loss", LOSSES)
def test_each_loss_decreases(compose_attack, frozen_net, loss):
    cfg = compose_attack(
        ["attack=inversion", f"loss={loss}", "init=noise", "steps=6", "restarts=1", "jitter=0", "blur_sigma=0"]
    )
    module = build_module(cfg, frozen_net, torch.arange(10))
    start = mean_loss(module)
    fit_reconstruction(module, TRAINER)
    assert module.reconstructions()[1].mean().item() < start


@pytest.mark.parametrize("init", INITS)
def test_each_init_is_in_unit_range(compose_attack, init):
    cfg = compose_attack(["attack=inversion", f"init={init}"])
    images = instantiate(cfg.inits[cfg.init])((4, 1, 28, 28), torch.Generator().manual_seed(0))
    assert images.shape == (4, 1, 28, 28) and 0.0 <= images.min() and images.max() <= 1.0
    expected = {"zeros": 0.0, "constant": 0.5}
    if init in expected:
        assert torch.equal(images, torch.full_like(images, expected[init]))


@pytest.mark.mnist
def test_mean_init_is_the_mean_training_image(compose_attack):
    cfg = compose_attack(["attack=inversion", "init=mean"])
    images = instantiate(cfg.inits.mean, noise=0.0)((2, 1, 28, 28), torch.Generator().manual_seed(0))
    assert images.shape == (2, 1, 28, 28) and 0.05 < images.mean() < 0.25  # MNIST's mean pixel is 0.13
    assert images[0, 0, 14, 14] > images[0, 0, 0, 0]  # bright centre, black border


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
    ):
        assert f"inversion/{key}" in metrics
    saved = torch.load(out / "reconstructions.pt", weights_only=True)
    judge = provision_classifier(cfg.judge, cfg.data, cfg.trainer, cfg.paths.cache_dir, "judge").net
    with torch.no_grad():
        recognised = (judge(saved["images"]).argmax(dim=1) == saved["labels"]).float().mean().item()
    assert metrics["inversion/report_judge_acc"] == pytest.approx(recognised)
    assert saved["images"].shape == (10, 1, 28, 28) and saved["images"].dtype == torch.float32
    assert 0.0 <= saved["images"].min() and saved["images"].max() <= 1.0
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
