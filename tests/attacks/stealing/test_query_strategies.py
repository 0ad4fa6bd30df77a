"""Active query strategies: what each picks, the rounds, and a real run in which every query is counted once."""

from __future__ import annotations

import pytest
import torch

from privacy_attacks.attacks.stealing import attack as stealing_attack
from privacy_attacks.attacks.stealing.query_strategies import KCenter, Uncertainty, round_sizes
from privacy_attacks.errors import ConfigError
from privacy_attacks.pipelines import run_attack

TINY = ["data=synthetic", "data.source.train_size=400", "data.source.test_size=60", "data.val_size=60"]
TINY_STEALING = ["attack=distillation", "target.members=200", "target.max_epochs=1", "schedule.steps=5"]


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


@pytest.mark.parametrize("strategy", ["uncertainty", "kcenter"])
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


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["query_strategy=greedy"], "query_strategy='greedy' is not one of the choices: random, uncertainty, kcenter"),
        (["query_strategy=kcenter", "active.candidates=50"], "active.candidates=50 is not allowed"),
        (["query_strategy=kcenter", "active.rounds=0"], "active.rounds=0"),
    ],
)
def test_bad_active_settings_stop_before_any_work(compose_attack, overrides, message):
    with pytest.raises(ConfigError, match=message):
        stealing_attack.validate(compose_attack(["attack=distillation", "query_budget=100", *overrides]))
