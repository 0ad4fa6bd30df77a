"""The white-box audit: Dirac canaries in DP-SGD's clipped sums, what the auditor records, and its bound against the
accountant's ε in repeated small private trainings."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from privacy_attacks.attacks.audit.bound import epsilon_lower_bound
from privacy_attacks.attacks.audit.dirac import DiracCanaries, draw_dirac_canaries
from privacy_attacks.defenses import DPSGD
from privacy_attacks.pipelines import run_attack
from privacy_attacks.seeding import generator


def private_linear(noise_multiplier: float, sample_rate: float, expected_batch_size: float, epochs: int = 1):
    """A linear model (50 -> 10: 510 parameters) under DP-SGD with plain SGD, as the classifier builds it."""
    torch.manual_seed(0)
    net = nn.Linear(50, 10)
    defense = DPSGD(noise_multiplier=noise_multiplier, max_grad_norm=1.0)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    return defense.make_private(net, optimizer, sample_rate, expected_batch_size, epochs)


def train(private, canaries: DiracCanaries, steps: int, seed: int = 0) -> dict:
    """``steps`` DP-SGD steps on Poisson-sampled batches of 400 random examples, the canaries attached as the
    Lightning fit attaches them; returns their record."""
    examples = random_examples(seed)
    module = SimpleNamespace(private=private)
    canaries.on_train_start(None, module)
    take_steps(private, steps, *examples)
    canaries.on_train_end(None, module)
    return canaries.record()


def random_examples(seed: int) -> tuple[Tensor, Tensor, torch.Generator]:
    """400 random examples (50 features, 10 classes) and the generator their batches are drawn from."""
    data = torch.Generator().manual_seed(seed)
    return torch.randn(400, 50, generator=data), torch.randint(0, 10, (400,), generator=data), data


def take_steps(private, steps: int, images: Tensor, labels: Tensor, data: torch.Generator) -> None:
    """``steps`` DP-SGD steps on Poisson-sampled batches of ``images``, drawn from ``data``."""
    for _ in range(steps):
        batch = torch.rand(400, generator=data) < private.sample_rate
        loss = F.cross_entropy(private.module(images[batch]), labels[batch])
        loss.backward()
        private.optimizer.step()
        private.optimizer.zero_grad()


def test_each_canary_in_its_step_adds_the_clipping_norm_to_its_coordinate_of_the_clipped_sum():
    """Sample rate 1 and no noise: every IN canary is in every step, so the update at its coordinate is the
    training examples' clipped sum plus 1, over the expected batch size; OUT canaries and other coordinates are
    untouched."""
    private = private_linear(0.0, sample_rate=1.0, expected_batch_size=8.0)
    coordinates = torch.tensor([0, 7, 500, 509])  # weight[0, 0], weight[0, 7], bias[0], bias[9]
    included = torch.tensor([True, False, True, False])
    canaries = DiracCanaries(coordinates, included, seed=0)
    canaries.on_train_start(None, SimpleNamespace(private=private))
    x, y = torch.randn(8, 50), torch.randint(0, 10, (8,))
    F.cross_entropy(private.module(x), y).backward()
    private.optimizer.pre_step()
    plain = private_linear(0.0, sample_rate=1.0, expected_batch_size=8.0)
    F.cross_entropy(plain.module(x), y).backward()
    plain.optimizer.pre_step()
    with_canaries = torch.cat([p.grad.flatten() for p in private.optimizer.params])
    without = torch.cat([p.grad.flatten() for p in plain.optimizer.params])
    expected = without.clone()
    expected[coordinates[included]] += 1.0 / 8.0
    torch.testing.assert_close(with_canaries, expected)
    assert canaries._sum.tolist() == pytest.approx([1.0, 0.0, 1.0, 0.0], abs=1e-6)  # the training sum removed


def test_without_noise_the_auditor_sees_each_canarys_steps_and_guesses_all_right():
    private = private_linear(0.0, sample_rate=0.1, expected_batch_size=40.0)
    coordinates, included = draw_dirac_canaries(seed=3, canaries=100, num_parameters=510)
    record = train(private, DiracCanaries(coordinates, included, seed=3), steps=60)
    torch.testing.assert_close(record["sum"], record["insertions"].double(), atol=1e-5, rtol=0)
    assert bool((record["insertions"][~included] == 0).all()) and bool((record["insertions"][included] > 0).all())
    assert record["steps"] == 60 and record["noise_multiplier"] == 0.0 and record["sample_rate"] == 0.1
    # The per-step draws are the audit's own: its seed, apart from the training's.
    sampling, expected = generator(3, "dirac_sampling"), torch.zeros(100, dtype=torch.long)
    for _ in range(60):
        expected += (included & (torch.rand(100, generator=sampling) < 0.1)).long()
    assert torch.equal(record["insertions"], expected)
    ordered = record["likelihood_ratio"].argsort(descending=True)
    assert bool(included[ordered[:20]].all()) and not bool(included[ordered[-20:]].any())


def test_a_resumed_fit_records_what_the_uninterrupted_one_does():
    """The canaries' state goes into the fit's checkpoints (``state_dict``): new canaries loaded from it after 6 of
    12 steps, attached to the resumed optimiser, end with the record of canaries that watched all 12 steps (the
    weights they started from included, not those of the resumption)."""
    import copy

    coordinates, included = draw_dirac_canaries(seed=3, canaries=50, num_parameters=510)
    whole = train(private_linear(1.0, 0.1, 40.0), DiracCanaries(coordinates, included, seed=3), steps=12)
    private, examples = private_linear(1.0, 0.1, 40.0), random_examples(0)
    add_noise, module = private.optimizer.add_noise, SimpleNamespace(private=private)
    first = DiracCanaries(coordinates, included, seed=3)
    first.on_train_start(None, module)
    take_steps(private, 6, *examples)
    saved = copy.deepcopy(first.state_dict())
    private.optimizer.add_noise = add_noise  # a resumed fit builds its optimiser afresh
    resumed = DiracCanaries(coordinates, included, seed=3)
    resumed.load_state_dict(saved)
    resumed.on_train_start(None, module)
    take_steps(private, 6, *examples)
    resumed.on_train_end(None, module)
    record = resumed.record()
    for name in ("sum", "likelihood_ratio", "insertions", "last_iterate", "steps"):
        assert torch.equal(torch.as_tensor(record[name]), torch.as_tensor(whole[name])), name


def test_the_likelihood_ratio_is_the_mixture_against_pure_noise_by_hand():
    canaries = DiracCanaries(torch.tensor([0, 1]), torch.tensor([True, False]), seed=0)
    canaries._sample_rate, canaries._noise_multiplier = 0.25, 2.0
    x = torch.tensor([1.5, -0.5], dtype=torch.float64)
    canaries._observe(x, torch.tensor([True, False]))

    def by_hand(v):  # log[(0.75 N(v; 0, 4) + 0.25 N(v; 1, 4)) / N(v; 0, 4)]
        density = lambda mean: math.exp(-((v - mean) ** 2) / 8)  # noqa: E731
        return math.log((0.75 * density(0) + 0.25 * density(1)) / density(0))

    assert canaries._likelihood_ratio.tolist() == pytest.approx([by_hand(1.5), by_hand(-0.5)])
    assert canaries._sum.tolist() == [1.5, -0.5]


def test_the_bound_stays_below_the_accountants_epsilon_in_repeated_small_private_runs():
    """Five private trainings at ε ≈ 2 (RDP, δ = 1e-5), 500 canaries each, 50 guesses IN and 50 OUT: the 95% bound
    of every score never exceeds the accountant's ε. A score that reads the auditor's hidden per-step draws (no DP
    applies to it) gets all 100 right, 3.49 at δ = 0, so the test can fail."""
    from opacus.accountants.utils import get_noise_multiplier

    q, steps, delta = 0.2, 50, 1e-5
    sigma = get_noise_multiplier(target_epsilon=2.0, target_delta=delta, sample_rate=q, steps=steps, accountant="rdp")
    for seed in range(5):
        private = private_linear(sigma, sample_rate=q, expected_batch_size=q * 400)
        coordinates, included = draw_dirac_canaries(seed, canaries=500, num_parameters=510)
        record = train(private, DiracCanaries(coordinates, included, seed=seed), steps=steps, seed=seed)
        epsilon = private.epsilon()
        assert 1.8 < epsilon <= 2.0
        # What is left of each canary's record once its own insertions are taken out is the noise alone, of
        # standard deviation σ per step: the observation is neither weaker nor stronger than the mechanism's.
        noise = (record["sum"] - record["insertions"]) / math.sqrt(steps)
        assert abs(float(noise.std()) / sigma - 1) < 0.15 and abs(float(noise.mean())) < 0.2 * sigma
        for key in ("likelihood_ratio", "sum", "last_iterate"):
            ordered = record[key].argsort(descending=True)
            right = int(included[ordered[:50]].sum()) + int((~included[ordered[-50:]]).sum())
            assert epsilon_lower_bound(500, 100, right, delta) <= epsilon, (seed, key)
        cheat = record["insertions"].double().argsort(descending=True)
        right = int(included[cheat[:50]].sum()) + int((~included[cheat[-50:]]).sum())
        assert right == 100 and epsilon_lower_bound(500, 100, right, 0.0) > epsilon


# Synthetic 1x28x28 images, LeNet5 (61,706 parameters) on 100 members for 8 epochs of DP-SGD (4 steps each, sample
# rate 1/4: an IN canary misses all 32 steps with probability 1e-4): seconds.
TINY_WHITEBOX = [
    "attack=audit",
    "canary_kind=dirac",
    "data=synthetic",
    "data.image_shape=[1,28,28]",
    "data.source.train_size=600",
    "data.source.test_size=60",
    "data.val_size=60",
    "target.members=100",
    "target.max_epochs=8",
    "canaries=2000",
    "guesses_in=50",
    "guesses_out=50",
]


def test_a_small_whitebox_audit_runs_through_the_pipeline_and_is_cached(compose_attack, cache_dir, monkeypatch):
    """No noise: all 100 guesses right, the bound at its ceiling for 100 of 100 on 2,000 canaries; with noise at
    ε = 1 below the accountant's ε; each seed's canaries train their own target, read back from the cache."""
    from privacy_attacks import cache

    before = set(cache_dir.glob("canary-target-*.pt"))  # the cache is shared with other tests
    metrics = run_attack(compose_attack([*TINY_WHITEBOX, "defense=grid/dpsgd_no_noise"]))
    assert metrics["audit/canary_correct"] == 100 and metrics["audit/canaries"] == 2000
    assert metrics["audit/canary_epsilon_lb"] == pytest.approx(epsilon_lower_bound(2000, 100, 100, 1e-5))
    assert metrics["target/privacy/epsilon"] == math.inf and metrics["audit/canary_steps"] == 32
    (path,) = set(cache_dir.glob("canary-target-*.pt")) - before
    record = cache.read(path)["recorded"]  # cached with the weights: each canary's steps, seen exactly
    torch.testing.assert_close(record["sum"], record["insertions"].double(), atol=1e-4, rtol=0)
    private = compose_attack([*TINY_WHITEBOX, "defense=grid/dpsgd_eps1", "target.max_epochs=2"])
    first = run_attack(private)
    assert first["audit/canary_epsilon_lb"] <= first["target/privacy/epsilon"] <= 1.0
    from privacy_attacks import targets

    def no_training(*args, **kwargs):
        raise AssertionError("the canary target should come from the cache")

    monkeypatch.setattr(targets, "fit_classifier", no_training)
    assert run_attack(private) == pytest.approx({**first, "time/attack_s": pytest.approx(0, abs=1e9)})
    monkeypatch.undo()
    run_attack(compose_attack([*TINY_WHITEBOX, "defense=grid/dpsgd_eps1", "target.max_epochs=2", "seed=1"]))
    assert len(set(cache_dir.glob("canary-target-*.pt")) - before) == 3
