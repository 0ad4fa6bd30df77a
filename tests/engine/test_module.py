"""The reconstruction engine: frozen target, unit range, best iterate and restart, seeding, trainable objective
parameters."""

from __future__ import annotations

import importlib
from functools import partial

import pytest
import torch
from hydra.utils import get_method

from privacy_attacks.attacks.inversion.objectives import ClassInversion, CrossEntropySimilarity
from privacy_attacks.engine import ReconstructionModule, fit_reconstruction
from privacy_attacks.engine.inits import ConstantInit, NoiseInit
from privacy_attacks.engine.module import ENGINE_KEYS, engine_hparams, prior_settings
from privacy_attacks.engine.priors import CoarseToFine, GaussianBlur, Jitter, PixelEnergy, TotalVariation
from privacy_attacks.errors import ConfigError, UserError
from privacy_attacks.models import LeNet5
from tests.conftest import attack_config

TRAINER = {"accelerator": "cpu", "devices": 1, "enable_progress_bar": False}


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


def test_a_coarse_start_keeps_the_iterate_in_blocks_until_its_stages_end(frozen_net):
    priors = {"tv": TotalVariation(1e-2), "jitter": Jitter(1), "coarse": CoarseToFine(4, stage_steps=2)}
    module = engine(frozen_net, steps=2, priors=priors)
    fit_reconstruction(module, TRAINER)  # two steps: both at 4 x 4 blocks
    blocks = module.images.detach().view(-1, 1, 7, 4, 7, 4)
    assert torch.allclose(blocks, blocks.mean(dim=(3, 5), keepdim=True).expand_as(blocks), atol=1e-6)
    free = engine(frozen_net, steps=6, priors={**priors, "coarse": CoarseToFine(4, stage_steps=2)})
    fit_reconstruction(free, TRAINER)  # steps 4 and 5 at full resolution
    blocks = free.images.detach().view(-1, 1, 14, 2, 14, 2)
    assert not torch.allclose(blocks, blocks.mean(dim=(3, 5), keepdim=True).expand_as(blocks), atol=1e-4)


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


def test_identical_restarts_are_reported(frozen_net, caplog):
    with caplog.at_level("WARNING"):
        engine(frozen_net, steps=1, restarts=2, init=ConstantInit(0.0), priors={"tv": TotalVariation(1e-2)})
    assert "will end identical" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        engine(frozen_net, steps=1, restarts=2, init=ConstantInit(0.0), priors={"jitter": Jitter(2)})
        engine(frozen_net, steps=1, restarts=2, priors={"tv": TotalVariation(1e-2)})  # random starts
    assert "will end identical" not in caplog.text


def test_every_default_layer_of_feature_inversion_has_restarts_that_can_differ(compose_attack):
    for layer in compose_attack(["attack=feature_inversion"]).layers:
        cfg = compose_attack(["attack=feature_inversion", f"layer={layer}"])
        random_start = cfg.init in ("noise", "uniform", "network")
        assert cfg.restarts == 1 or random_start or cfg.jitter > 0, layer


def test_restarts_from_one_black_image_still_differ_through_per_image_jitter(frozen_net):
    module = engine(frozen_net, steps=5, restarts=3, init=ConstantInit(0.0), priors={"jitter": Jitter(2)})
    fit_reconstruction(module, TRAINER)
    images, _ = module.all_reconstructions()  # (3, 10, 1, 28, 28)
    assert not torch.equal(images[0], images[1]) and not torch.equal(images[1], images[2])


def test_the_best_restart_is_chosen_by_the_attacks_own_loss(frozen_net):
    module = engine(frozen_net, steps=4, restarts=3, priors={"tv": TotalVariation(1e-2)})
    fit_reconstruction(module, TRAINER)
    all_images, all_losses = module.all_reconstructions()
    module.best_loss = torch.tensor([[5.0] * 10, [1.0] * 10, [3.0] * 10]).flatten()  # restart 1 is best everywhere
    images, losses = module.reconstructions()
    assert torch.equal(images, all_images[1]) and torch.equal(losses, torch.ones(10))
    # Each image keeps its own best restart: image i's is restart i % 3 (loss 0.5), the others' loss 2.
    best = torch.arange(10) % 3
    module.best_loss = torch.where(torch.arange(3)[:, None] == best, 0.5, 2.0).flatten()
    images, losses = module.reconstructions()
    assert torch.equal(images, all_images[best, torch.arange(10)]) and torch.equal(losses, torch.full((10,), 0.5))


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


RECONSTRUCTION_ATTACKS = ("inversion", "feature_inversion", "gradient_inversion")
PRIOR_CASES = [
    (attack, name) for attack in RECONSTRUCTION_ATTACKS for name in attack_config(attack).priors
]  # every prior node of every reconstruction attack's config


@pytest.mark.parametrize(("attack", "prior"), PRIOR_CASES)
def test_every_prior_weight_is_checked_by_the_key_it_reads(compose_attack, attack, prior):
    key = prior_settings(attack_config(attack))[f"priors.{prior}.weight"]
    cfg = compose_attack([f"attack={attack}", f"{key}=-1"])
    with pytest.raises(ConfigError, match=f"{key}=-1 is not allowed"):
        get_method(cfg.attack.validate)(cfg)


@pytest.mark.parametrize("attack", RECONSTRUCTION_ATTACKS)
def test_a_new_prior_node_is_validated_and_logged_without_touching_the_attack(compose_attack, attack):
    node = ["+priors.extra._target_=privacy_attacks.engine.priors.PixelEnergy", "+extra_lambda=0.5"]
    cfg = compose_attack([f"attack={attack}", *node, "+priors.extra.weight=${extra_lambda}"])
    get_method(cfg.attack.validate)(cfg)
    hparams = engine_hparams(cfg, ["seed"])
    assert hparams["extra_lambda"] == 0.5
    assert set(ENGINE_KEYS) <= set(hparams) and {"tv_lambda", "l2_lambda"} <= set(hparams)
    bad = compose_attack([f"attack={attack}", *node, "+priors.extra.weight=-2"])
    with pytest.raises(ConfigError, match=r"priors\.extra\.weight=-2"):
        get_method(bad.attack.validate)(bad)


def test_the_penalty_weights_are_those_of_penalty_priors_a_new_one_included(compose_attack):
    from privacy_attacks.engine.module import penalty_weights

    node = ["+priors.extra._target_=privacy_attacks.engine.priors.PixelEnergy", "+extra_lambda=0.5"]
    cfg = compose_attack(["attack=inversion", *node, "+priors.extra.weight=${extra_lambda}"])
    assert penalty_weights(cfg) == {"tv": "tv_lambda", "l2": "l2_lambda", "extra": "extra_lambda"}  # no jitter, blur


def test_a_priors_own_bad_argument_is_a_config_error(compose_attack):
    cfg = compose_attack(["attack=inversion", "blur_every=0"])
    with pytest.raises(ConfigError, match="priors.blur: every=0"):
        get_method(cfg.attack.validate)(cfg)


@pytest.mark.parametrize("attack", ["inversion", "feature_inversion", "gradient_inversion"])
def test_every_logged_hparam_is_a_key_of_the_attacks_config(compose_attack, attack):
    from omegaconf import OmegaConf

    hparams = importlib.import_module(f"privacy_attacks.attacks.{attack}.attack").HPARAMS
    cfg = compose_attack([f"attack={attack}"])
    missing = [key for key in hparams if OmegaConf.select(cfg, key, default="missing") == "missing"]
    assert missing == []


@pytest.mark.parametrize(
    ("node", "message"),
    [
        (
            "privacy_attacks.engine.priors.PixelEnergi",
            r"^priors\.extra \(privacy_attacks\.engine\.priors\.PixelEnergi\) cannot be built: ",
        ),
        (
            "torch.nn.Identity",
            r"^priors\.extra builds an object of class Identity, not a prior: its _target_ must be a subclass of ",
        ),
    ],
)
def test_a_prior_node_that_builds_no_prior_is_named_in_one_line(compose_attack, node, message):
    cfg = compose_attack(["attack=inversion", f"+priors.extra._target_={node}", "+priors.extra.weight=0.5"])
    with pytest.raises(ConfigError, match=message) as error:
        get_method(cfg.attack.validate)(cfg)
    assert "\n" not in str(error.value)


class OneNumber(PixelEnergy):
    """A prior that forgot the per-image dimension."""

    def penalty(self, images):
        return super().penalty(images).mean()


def test_a_prior_penalty_that_is_not_one_value_per_image_is_named(frozen_net):
    objective = ClassInversion(frozen_net, torch.arange(10), CrossEntropySimilarity())
    module = ReconstructionModule(
        objective, {"mine": OneNumber(1.0)}, NoiseInit(), partial(torch.optim.Adam, lr=0.1), 2
    )
    with pytest.raises(UserError, match=r"priors\.mine \(OneNumber\) gave penalties of shape \(\): .* \(10,\)"):
        module()
