"""RMIA (Zarifzadeh et al. 2024): its score against the paper's formula, the offline prior, setting `a`, and runs."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from privacy_attacks.attacks.membership.rmia import (
    RMIA,
    fit_offline_a,
    offline_prior,
    online_prior,
    rmia_scores,
    true_label_probs,
)
from privacy_attacks.errors import ConfigError
from tests.attacks.membership.conftest import N_ATTACKER, N_EVAL, TRAIN_SIZE


def test_the_score_is_the_fraction_of_population_points_the_likelihood_ratio_beats():
    target_x, prior_x = torch.tensor([0.9, 0.2, 0.5]), torch.tensor([0.6, 0.4, 0.5])
    target_z, prior_z = torch.tensor([0.8, 0.28, 0.7, 0.1]), torch.tensor([0.8, 0.2, 0.35, 0.2])
    for gamma in (1.0, 2.0):
        expected = []
        for px, qx in zip(target_x.tolist(), prior_x.tolist()):
            wins = [(px / qx) / (pz / qz) >= gamma for pz, qz in zip(target_z.tolist(), prior_z.tolist())]
            expected.append(sum(wins) / len(wins))
        got = rmia_scores(target_x.double(), prior_x.double(), target_z.double(), prior_z.double(), gamma)
        assert got.tolist() == pytest.approx(expected)
    # by hand, gamma 1: x ratios 1.5, 0.5, 1.0 against z ratios 1, 1.4, 2, 0.5
    assert rmia_scores(target_x.double(), prior_x.double(), target_z.double(), prior_z.double(), 1.0).tolist() == [
        0.75,
        0.25,
        0.5,
    ]


def test_the_offline_prior_is_the_linear_approximation_of_the_in_side():
    out = torch.tensor([0.2, 0.9])
    assert offline_prior(out, 1.0).tolist() == pytest.approx(out.tolist())  # a = 1: Pr_IN = Pr_OUT
    assert offline_prior(out, 0.0).tolist() == pytest.approx([0.6, 0.95])  # a = 0: Pr_IN = 1
    assert offline_prior(out, 0.5).tolist() == pytest.approx([0.5 * (1.5 * 0.2 + 0.5), 0.5 * (1.5 * 0.9 + 0.5)])


def test_true_label_probs_reads_each_images_label_for_every_model():
    log_probs = torch.log_softmax(torch.randn(3, 5, 10, dtype=torch.float64), dim=-1)
    labels = torch.randint(0, 10, (5,))
    got = true_label_probs(log_probs, labels)
    assert got.shape == (3, 5)
    assert got[2, 4] == pytest.approx(log_probs[2, 4, labels[4]].exp().item())


def test_a_is_the_grid_value_whose_scores_separate_model_0s_members_best():
    generator = torch.Generator().manual_seed(0)
    in_mask = torch.stack([torch.arange(8) < 4, torch.arange(8) >= 4] * 2)  # (4, 8), balanced pairs
    probs = 0.3 + 0.2 * torch.rand(4, 8, generator=generator, dtype=torch.float64) + 0.4 * in_mask.double()
    population = 0.3 + 0.2 * torch.rand(4, 6, generator=generator, dtype=torch.float64)
    a = fit_offline_a(probs, in_mask, population, gamma=1.0)
    assert a in [i / 10 for i in range(11)]
    assert fit_offline_a(probs[:2], in_mask[:2], population[:2], gamma=1.0) in [i / 10 for i in range(11)]
    with pytest.raises(ConfigError, match="give methods"):  # one model: no other model to give an OUT signal
        fit_offline_a(probs[:1], in_mask[:1], population[:1], gamma=1.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_ref_models": 3}, "even"),
        ({"a": 1.5}, r"\[0, 1\]"),
        ({"gamma": 0}, "gamma"),
        ({"num_population": 0}, "num_population"),
        ({"score": "rank"}, "score"),
    ],
)
def test_bad_settings_are_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        RMIA(**kwargs)


def test_offline_rmia_runs_on_the_attackers_own_images_and_queries_the_population(context):
    attack = RMIA(num_ref_models=4, online=False, num_population=N_ATTACKER - 2 * TRAIN_SIZE)
    attack.check_sizes(TRAIN_SIZE, N_EVAL, N_ATTACKER)
    with pytest.raises(ConfigError, match="num_population"):
        RMIA(num_ref_models=4, num_population=N_ATTACKER).check_sizes(TRAIN_SIZE, N_EVAL, N_ATTACKER)
    output = attack(context)
    assert output.scores.shape == (N_EVAL,) and ((output.scores >= 0) & (output.scores <= 1)).all()
    assert 0 <= output.info["rmia/a"] <= 1
    assert context.api.queries_used == attack.queries_needed(TRAIN_SIZE, N_EVAL, N_ATTACKER) == N_EVAL + 20


def test_online_rmia_needs_population_the_reference_models_add(context):
    attack = RMIA(num_ref_models=2, online=True, num_population=10)
    with pytest.raises(ConfigError, match="num_population"):
        attack.check_sizes(TRAIN_SIZE, N_EVAL, N_ATTACKER)  # each model's 10 images are all evaluation images
    bigger = dataclasses.replace(context, train_size=TRAIN_SIZE + 5)  # 5 more each: 10 population images
    attack.check_sizes(TRAIN_SIZE + 5, N_EVAL, N_ATTACKER)
    output = attack(bigger)
    assert output.scores.shape == (N_EVAL,) and "rmia/a" not in output.info


def test_online_rmia_on_many_nonmembers_takes_its_population_from_the_attackers_images(context):
    # Models of 4 images from 20 evaluation images: trained on evaluation images alone, so the population is the
    # attacker's first images (OUT for every model), as many as the attacker holds.
    attack = RMIA(num_ref_models=4, online=True, num_population=N_ATTACKER)
    attack.check_sizes(4, N_EVAL, N_ATTACKER)
    with pytest.raises(ConfigError, match="num_population"):
        RMIA(num_ref_models=4, online=True, num_population=N_ATTACKER + 1).check_sizes(4, N_EVAL, N_ATTACKER)
    output = attack(dataclasses.replace(context, train_size=4))
    assert output.scores.shape == (N_EVAL,) and output.info["rmia/num_population"] == N_ATTACKER


def test_the_online_prior_weighs_in_and_out_models_alike():
    probs = torch.tensor([[0.9, 0.2, 0.6], [0.7, 0.4, 0.5], [0.1, 0.6, 0.4], [0.3, 0.8, 0.3]], dtype=torch.float64)
    balanced = torch.tensor([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1]], dtype=torch.bool)  # every image IN for 2 of 4
    assert torch.equal(online_prior(probs, balanced), probs.mean(dim=0))
    # image 0 IN for model 0 only: ½(0.9 + mean(0.7, 0.1, 0.3)); image 1 IN for none: the OUT mean; image 2 for all
    unbalanced = torch.tensor([[1, 0, 1], [0, 0, 1], [0, 0, 1], [0, 0, 1]], dtype=torch.bool)
    expected = [0.5 * (0.9 + (0.7 + 0.1 + 0.3) / 3), (0.2 + 0.4 + 0.6 + 0.8) / 4, (0.6 + 0.5 + 0.4 + 0.3) / 4]
    assert online_prior(probs, unbalanced).tolist() == pytest.approx(expected)


@pytest.mark.parametrize("online", [True, False])
def test_the_ratio_score_ranks_like_the_fraction_and_decides_the_same(context, online):
    fraction = RMIA(num_ref_models=4, online=online, num_population=10)
    ratio = RMIA(num_ref_models=4, online=online, num_population=10, score="ratio")
    small = dataclasses.replace(context, train_size=4) if online else context
    by_fraction, by_ratio = fraction(small), ratio(small)
    assert torch.equal(by_fraction.predictions, by_ratio.predictions)
    # wherever the fraction orders two images strictly, the ratio orders them the same way
    f, r = by_fraction.scores, by_ratio.scores
    strictly = f[:, None] > f[None, :]
    assert (r[:, None] > r[None, :])[strictly].all()
    assert len(r.unique()) > len(f.unique())  # ... and breaks its ties (10 population points: 11 fractions at most)
