"""The class-inversion objective: every similarity loss of the config decreases; the weight noise of model
augmentation is the attacker's own and leaves the target untouched."""

from __future__ import annotations

import pytest
import torch

from privacy_attacks.attacks.inversion.attack import build_module
from privacy_attacks.attacks.inversion.objectives import ClassInversion, LogitSimilarity
from privacy_attacks.engine import ReconstructionModule, fit_reconstruction
from privacy_attacks.engine.stacked import stack_refusal
from privacy_attacks.models import LeNet5
from tests.conftest import attack_config

TRAINER = {"accelerator": "cpu", "devices": 1, "enable_progress_bar": False}


LOSSES = list(attack_config("inversion").losses)  # every similarity the config offers


@pytest.fixture
def frozen_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return LeNet5().eval().requires_grad_(False)


def mean_loss(module: ReconstructionModule) -> float:
    with torch.no_grad():
        return module()[0].mean().item()


@pytest.mark.parametrize("loss", LOSSES)
def test_each_loss_decreases(compose_attack, frozen_net, loss):
    cfg = compose_attack(
        ["attack=inversion", f"loss={loss}", "init=noise", "steps=6", "restarts=1", "jitter=0", "blur_sigma=0"]
    )
    module = build_module(cfg, frozen_net, torch.arange(10))
    start = mean_loss(module)
    fit_reconstruction(module, TRAINER)
    assert module.reconstructions()[1].mean().item() < start


def augmented_engine(compose_attack, net, seed, augmentation="weight_noise=0.1", steps=3):
    cfg = compose_attack(["attack=inversion", augmentation, f"seed={seed}", f"steps={steps}"])
    return build_module(cfg, net, torch.arange(10))


@pytest.mark.parametrize("augmentation", [{"weight_noise": 0.1}, {"feature_dropout": 0.2}])
def test_model_augmentation_draws_networks_around_the_target_and_leaves_it_untouched(frozen_net, augmentation):
    images = torch.rand(4, 1, 28, 28)
    objective = ClassInversion(frozen_net, torch.arange(4), LogitSimilarity(), **augmentation)
    objective.use_generator(torch.Generator().manual_seed(0))
    before = {k: v.clone() for k, v in frozen_net.state_dict().items()}
    first, second = objective.network(images), objective.network(images)
    clean = frozen_net(images)
    assert not torch.allclose(first, second)  # a fresh draw every pass
    assert (first - clean).abs().mean() < clean.abs().mean()  # near the target, not another network
    assert all(torch.equal(before[k], v) for k, v in frozen_net.state_dict().items())
    assert torch.equal(frozen_net(images), clean)  # no hook left behind
    objective.use_generator(torch.Generator().manual_seed(0))
    assert torch.equal(objective.network(images), first)  # the draws are the generator's alone
    pixels = images.clone().requires_grad_(True)
    objective(pixels).sum().backward()
    assert pixels.grad.abs().sum() > 0 and all(p.grad is None for p in frozen_net.parameters())


def test_feature_dropout_draws_a_mask_per_image(frozen_net):
    objective = ClassInversion(frozen_net, torch.arange(2), LogitSimilarity(), feature_dropout=0.5)
    objective.use_generator(torch.Generator().manual_seed(0))
    same = torch.rand(1, 1, 28, 28).expand(2, 1, 28, 28)
    logits = objective.network(same)
    assert not torch.allclose(logits[0], logits[1])


def test_without_augmentation_the_objective_is_the_target(frozen_net):
    images = torch.rand(4, 1, 28, 28)
    plain = ClassInversion(frozen_net, torch.arange(4), LogitSimilarity())
    assert torch.equal(plain.network(images), frozen_net(images))  # no generator needed
    for bad in ({"weight_noise": -0.1}, {"feature_dropout": 1.0}, {"feature_dropout": -0.1}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            ClassInversion(frozen_net, torch.arange(4), LogitSimilarity(), **bad)


@pytest.mark.parametrize("augmentation", ["weight_noise=0.1", "feature_dropout=0.2"])
def test_model_augmentation_comes_from_the_attack_seed_and_fits_alone(compose_attack, frozen_net, augmentation):
    runs = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        module = augmented_engine(compose_attack, frozen_net, seed, augmentation)
        fit_reconstruction(module, TRAINER)
        runs[name] = module.reconstructions()[0]
    assert torch.equal(runs["a"], runs["b"])
    assert not torch.equal(runs["a"], runs["c"])
    # The same setting with another seed's draws is not the same network: never stacked into one pass.
    augmented = [augmented_engine(compose_attack, frozen_net, seed, augmentation) for seed in (0, 1)]
    assert stack_refusal(augmented) == "the engines invert different networks"
    plain = [augmented_engine(compose_attack, frozen_net, seed, "weight_noise=0") for seed in (0, 1)]
    assert stack_refusal(plain) is None
