"""Active query strategies: what each picks, the rounds, and a real run in which every query is counted once."""

from __future__ import annotations

import pytest
import torch

from privacy_attacks.attacks.stealing import attack as stealing_attack
from privacy_attacks.attacks.stealing import distillation
from privacy_attacks.attacks.stealing.query_strategies import (
    Adaptive,
    KCenter,
    RunningStandardiser,
    Uncertainty,
    kmeans,
    round_sizes,
)
from privacy_attacks.blackbox import Probabilities
from privacy_attacks.errors import ConfigError
from privacy_attacks.pipelines import run_attack
from tests.conftest import attack_config

TINY = ["data=synthetic", "data.source.train_size=400", "data.source.test_size=60", "data.val_size=60"]
TINY_STEALING = ["attack=distillation", "target.members=200", "target.max_epochs=1", "schedule.steps=5"]
# Every strategy the config offers that buys in rounds (a null node is the random draw).
ACTIVE = [name for name, node in attack_config("distillation").query_strategies.items() if node is not None]


def test_round_sizes_split_the_budget_evenly_and_never_empty():
    assert round_sizes(10, 3) == [4, 3, 3] and sum(round_sizes(1000, 7)) == 1000
    assert round_sizes(2, 5) == [1, 1]


def test_uncertainty_picks_the_smallest_margins_among_the_unqueried():
    probs = torch.tensor([[0.5, 0.5], [0.9, 0.1], [0.55, 0.45], [0.6, 0.4], [0.99, 0.01]])
    queried = torch.tensor([True, False, False, False, False])
    assert Uncertainty().select(probs, queried, 2).tolist() == [2, 3]  # 0 is the least sure, but already queried


def test_kcenter_picks_the_farthest_from_everything_queried_then_spreads():
    probs = torch.tensor([[1.0, 0.0], [0.98, 0.02], [0.0, 1.0], [0.5, 0.5], [0.02, 0.98]])
    queried = torch.tensor([True, False, False, False, False])
    first, second = KCenter().select(probs, queried, 2).tolist()
    assert first == 2 and second == 3  # the far corner, then the middle (farther from both than 1 or 4)


def two_blobs(per_blob: int) -> torch.Tensor:
    """(2 * per_blob, 1, 4, 4) images: the first half dark, the second bright, each with a little noise."""
    generator = torch.Generator().manual_seed(0)
    noise = 0.05 * torch.rand(2 * per_blob, 1, 4, 4, generator=generator)
    return torch.cat([torch.zeros(per_blob, 1, 4, 4), torch.ones(per_blob, 1, 4, 4)]) + noise


def test_kmeans_separates_two_blobs():
    labels = kmeans(two_blobs(10).flatten(1), 2, torch.Generator().manual_seed(1))
    assert len(set(labels[:10].tolist())) == 1 and len(set(labels[10:].tolist())) == 1 and labels[0] != labels[10]


def test_running_standardiser_uses_every_row_seen():
    standardise = RunningStandardiser(1)
    standardise(torch.tensor([[0.0], [2.0]]))
    assert torch.allclose(standardise(torch.tensor([[1.0], [1.0]])), torch.zeros(2, 1))  # mean 1 over all four rows


def certain_on_dark(images: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """An API answering one-hot probabilities on the dark images and uniform ones on the bright."""
    dark = images[indices].flatten(1).mean(1) < 0.5
    answers = torch.full((len(indices), 2), 0.5)
    answers[dark] = torch.tensor([1.0, 0.0])
    return answers


def test_adaptive_learns_which_cluster_pays_and_never_buys_twice():
    images = two_blobs(200)
    strategy = Adaptive(clusters=2, batch=10, lr=0.5, rewards=["certainty"])
    strategy.prepare(images, Probabilities(), seed=3)
    queried = torch.zeros(len(images), dtype=torch.bool)
    probs = torch.full((len(images), 2), 0.5)
    chosen, answers = strategy.buy(probs, queried, 150, lambda indices: certain_on_dark(images, indices))
    assert len(chosen) == 150 and len(chosen.unique()) == 150 and torch.equal(answers, certain_on_dark(images, chosen))
    assert (chosen[-50:] < 200).float().mean() > 0.9  # the last steps buy almost only dark (certain) images
    queried[chosen] = True
    rest, _ = strategy.buy(probs, queried, 250, lambda indices: certain_on_dark(images, indices))
    assert sorted(torch.cat([chosen, rest]).tolist()) == list(range(400))  # a spent cluster leaves the policy


def test_adaptive_loss_reward_reads_the_round_students_probabilities():
    strategy = Adaptive(clusters=1, batch=1, lr=0.1, rewards=["loss", "diversity"])
    strategy.prepare(two_blobs(2), Probabilities(), seed=0)
    strategy.observe(torch.tensor([0]), torch.tensor([[1.0, 0.0]]))
    answers, student = torch.tensor([[0.0, 1.0]]), torch.tensor([[0.75, 0.25]])
    loss, diversity = strategy.reward_columns(answers, student)[0].tolist()
    assert loss == pytest.approx(-torch.tensor(0.25).log().item()) and diversity == pytest.approx(1.0)


@pytest.mark.parametrize("strategy", ACTIVE)
def test_an_active_run_queries_each_image_once_in_rounds_within_the_budget(compose_attack, monkeypatch, strategy):
    queried = []
    real_query = stealing_attack.BlackBoxAPI.query
    monkeypatch.setattr(stealing_attack.BlackBoxAPI, "query", lambda api, x: queried.append(x) or real_query(api, x))
    overrides = [*TINY, *TINY_STEALING, "query_budget=50", f"query_strategy={strategy}", "active.rounds=3"]
    metrics = run_attack(compose_attack([*overrides, "active.candidates=200"]))
    assert metrics["queries/used"] == 50 and [len(x) for x in queried] == [17, 17, 16]
    images = torch.cat(queried).flatten(1)
    assert len(images.unique(dim=0)) == 50  # no image bought twice
    random = []
    monkeypatch.setattr(stealing_attack.BlackBoxAPI, "query", lambda api, x: random.append(x) or real_query(api, x))
    run_attack(compose_attack([*TINY, *TINY_STEALING, "query_budget=50"]))
    assert torch.equal(queried[0], random[0][:17])  # the first round is the random strategy's first queries


def test_each_round_student_names_its_round_in_the_progress_lines(compose_attack, monkeypatch):
    names = []
    real_log = distillation.StepLog
    monkeypatch.setattr(distillation, "StepLog", lambda what, **kw: names.append(what) or real_log(what, **kw))
    overrides = [*TINY, *TINY_STEALING, "query_budget=30", "query_strategy=uncertainty", "active.rounds=3"]
    run_attack(compose_attack([*overrides, "active.candidates=100"]))
    assert names == ["student for query round 2/3", "student for query round 3/3", "student"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["query_strategy=greedy"],
            "query_strategy='greedy' is not one of the choices: random, uncertainty, kcenter, adaptive",
        ),
        (
            ["query_strategy=adaptive", "query_strategies.adaptive.rewards=[luck]"],
            "query_strategies.adaptive.rewards=\\['luck'\\]",
        ),
        (["query_strategy=adaptive", "query_strategies.adaptive.clusters=0"], "query_strategies.adaptive.clusters=0"),
        (
            ["query_strategy=kcenter", "query_strategies.kcenter._target_=torch.nn.Identity"],
            "query_strategies.kcenter builds an object of class Identity, not a query strategy",
        ),
        (["query_strategy=kcenter", "active.candidates=50"], "active.candidates=50 is not allowed"),
        (["query_strategy=kcenter", "active.rounds=0"], "active.rounds=0"),
    ],
)
def test_bad_active_settings_stop_before_any_work(compose_attack, overrides, message):
    with pytest.raises(ConfigError, match=message):
        stealing_attack.validate(compose_attack(["attack=distillation", "query_budget=100", *overrides]))
