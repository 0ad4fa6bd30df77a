"""Data-free stealing (queries=generator): the generator's shapes, the zeroth-order gradient, the query count of a
real run, and the settings refused before any work."""

from __future__ import annotations

import pytest
import torch

from privacy_attacks.attacks.stealing import attack as stealing_attack
from privacy_attacks.attacks.stealing.data_free import (
    Generator,
    centred_log_probs,
    disagreement,
    forward_difference_gradient,
    queries_per_iteration,
)
from privacy_attacks.errors import ConfigError
from privacy_attacks.pipelines import run_attack

TINY = ["data=synthetic", "data.source.train_size=400", "data.source.test_size=60", "data.val_size=60"]
TINY_DATA_FREE = [
    "attack=distillation",
    "target.members=200",
    "target.max_epochs=1",
    "queries=generator",
    "data_free.batch_size=8",
    "data_free.student_steps=2",
    "data_free.latent_dim=16",
    "data_free.generator_width=8",
]


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (1, 10, 10)])
def test_the_generator_makes_images_of_the_datas_shape_in_the_unit_interval(shape):
    images = Generator(shape, latent_dim=16, width=8)(torch.randn(5, 16))
    assert images.shape == (5, *shape) and images.min() >= 0 and images.max() <= 1


def test_the_disagreement_ignores_the_softmax_shift_and_is_zero_on_a_copy():
    logits = torch.randn(4, 10)
    target = centred_log_probs(logits)
    torch.testing.assert_close(disagreement(logits + 3.0, target), torch.zeros(4), atol=1e-5, rtol=0)
    assert (disagreement(-logits, target) > 0).all()


def test_the_forward_difference_gradient_points_along_the_true_gradient():
    """With many directions the estimate of a smooth loss's gradient lines up with autograd's."""
    weights = torch.randn(1, 2, 3, 3)

    def loss(x):
        return (x * weights).flatten(1).sum(dim=1) + (x**2).flatten(1).sum(dim=1)

    x = torch.rand(3, 1, 2, 3, 3).squeeze(1)
    estimate, base = forward_difference_gradient(loss, x, 400, 1e-4, torch.Generator().manual_seed(0))
    true = weights + 2 * x
    cosine = torch.nn.functional.cosine_similarity(estimate.flatten(1), true.flatten(1))
    torch.testing.assert_close(base, loss(x))
    assert (cosine > 0.9).all()


def test_the_kl_student_loss_is_zero_on_a_copy_and_positive_otherwise():
    from privacy_attacks.attacks.stealing.data_free import kl_divergence

    logits = torch.randn(4, 10)
    torch.testing.assert_close(
        kl_divergence(logits + 1.0, centred_log_probs(logits)), torch.zeros(4), atol=1e-5, rtol=0
    )
    assert (kl_divergence(-logits, centred_log_probs(logits)) > 0).all()


def test_a_data_free_run_spends_whole_iterations_within_the_budget(compose_attack, monkeypatch):
    queried = []
    real_query = stealing_attack.BlackBoxAPI.query
    monkeypatch.setattr(stealing_attack.BlackBoxAPI, "query", lambda api, x: queried.append(x) or real_query(api, x))
    cost = queries_per_iteration(8, student_steps=2, generator_steps=1, directions=1)
    metrics = run_attack(compose_attack([*TINY, *TINY_DATA_FREE, f"query_budget={3 * cost + 5}"]))
    assert cost == 32 and metrics["queries/used"] == 3 * cost and metrics["steps"] == 3
    assert sum(len(x) for x in queried) == 3 * cost
    assert all(x.shape[1:] == (1, 28, 28) and x.min() >= 0 and x.max() <= 1 + 1e-3 for x in queried)
    assert 0 <= metrics["student/agreement"] <= 1


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["api.output=label"], "needs answers with scores"),
        (["defense=label_only"], r"the API's defence \(LabelOnly\(\)\) answers each image's label alone"),
        (["defense=topk", "defense.k=1"], r"the API's defence \(TopK\(k=1\)\) answers each image's label alone"),
        (["api.output=rounded", "api.decimals=0"], "api.output=rounded with api.decimals=0 answers each"),
        (["defense=rounding", "defense.decimals=0"], r"defence \(Rounding\(decimals=0\)\) answers each image's label"),
        (["query_budget=20"], "query_budget=20 is too small for queries=generator"),
        (["loss=mse"], "loss=mse is not used with queries=generator"),  # a sweep over it: the same job again
        (["query_strategy=kcenter"], "queries=generator has no pool"),
        (["data_free.directions=0"], "data_free.directions=0"),
        (["data_free.student_loss=mse"], "data_free.student_loss='mse' is not one of the choices: l1, kl"),
        (["data_free.replay_steps=-1"], "data_free.replay_steps=-1"),
    ],
)
def test_bad_data_free_settings_stop_before_any_work(compose_attack, overrides, message):
    with pytest.raises(ConfigError, match=message):
        stealing_attack.validate(compose_attack([*TINY, *TINY_DATA_FREE, "query_budget=1000", *overrides]))


@pytest.mark.parametrize("defense", [["defense=topk", "defense.k=2"], ["defense=rounding"], ["defense=dpsgd"]])
def test_defences_that_leave_scores_are_not_refused_by_the_data_free_attack(compose_attack, defense):
    stealing_attack.validate(compose_attack([*TINY, *TINY_DATA_FREE, "query_budget=1000", *defense]))
