"""The black-box query API: output modes, exact query counting, budget, no gradients, no weights exposed."""

import pickle

import pytest
import torch

from privacy_attacks.blackbox import (
    OUTPUT_MODES,
    BlackBoxAPI,
    Label,
    Logits,
    Probabilities,
    QueryBudgetExceeded,
    RoundedProbabilities,
)
from privacy_attacks.errors import ConfigError
from privacy_attacks.models import LeNet5


@pytest.fixture
def target() -> torch.nn.Module:
    torch.manual_seed(0)
    return LeNet5().eval().requires_grad_(False)


def images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


def test_query_counter_is_exact_per_image(target):
    api = BlackBoxAPI(target, budget=None, batch_size=7)
    for n in (1, 5, 16, 33):
        api.query(images(n))
    assert api.queries_used == 1 + 5 + 16 + 33
    assert api.num_calls == 4


def test_budget_is_enforced_and_a_refused_query_costs_nothing(target):
    api = BlackBoxAPI(target, budget=10)
    api.query(images(6))
    with pytest.raises(QueryBudgetExceeded, match="budget is 10.*6 were already answered.*4 left"):
        api.query(images(5))
    assert api.queries_used == 6 and api.queries_left == 4
    api.query(images(4))  # exactly up to the budget is allowed
    assert api.queries_used == 10 and api.queries_left == 0
    with pytest.raises(QueryBudgetExceeded):
        api.query(images(1))
    assert api.queries_used == 10


@pytest.mark.parametrize("budget", [0, -3, 2.5, True])
def test_bad_budget_is_refused(target, budget):
    with pytest.raises(ConfigError, match="query_budget"):
        BlackBoxAPI(target, budget=budget)


def test_answers_carry_no_gradient(target):
    x = images(4).requires_grad_(True)
    for mode in OUTPUT_MODES:
        answers = BlackBoxAPI(target, output=mode).query(x)
        assert not answers.requires_grad and answers.grad_fn is None
    assert x.grad is None
    assert all(p.grad is None for p in target.parameters())


def test_api_exposes_no_parameters_or_network(target):
    api = BlackBoxAPI(target)
    assert not isinstance(api, torch.nn.Module)
    for name in ("parameters", "state_dict", "named_parameters", "net", "model", "__dict__"):
        assert not hasattr(api, name), name
    public = {name: getattr(api, name) for name in dir(api) if not name.startswith("_")}
    assert set(public) == {"budget", "num_calls", "output", "queries_left", "queries_used", "query"}
    assert not any(isinstance(v, (torch.Tensor, torch.nn.Module)) for v in public.values())
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(api)


def test_output_modes_answer_what_the_service_returns(target):
    x = images(8)
    logits = target(x)
    probs = BlackBoxAPI(target, "probs").query(x)
    torch.testing.assert_close(probs, logits.softmax(-1))
    torch.testing.assert_close(probs.sum(-1), torch.ones(8))
    torch.testing.assert_close(BlackBoxAPI(target, "logits").query(x), logits)
    labels = BlackBoxAPI(target, "label").query(x)
    assert labels.dtype == torch.long and labels.shape == (8,)
    assert torch.equal(labels, logits.argmax(-1))
    rounded = BlackBoxAPI(target, RoundedProbabilities(decimals=1)).query(x)
    assert torch.allclose(rounded * 10, (rounded * 10).round(), atol=1e-5)
    assert (rounded - probs).abs().max() <= 0.05 + 1e-6


def test_output_mode_views_agree_with_the_answers(target):
    x = images(5)
    logits = target(x)
    for mode in (Probabilities(), Logits(), RoundedProbabilities(decimals=6), Label()):
        answers = mode.answer(logits)
        assert torch.equal(mode.labels(answers), logits.argmax(-1))
        # softmax(scores) is the answered class distribution; for probabilities it is the target's softmax.
        assert mode.scores(answers).shape == (5, 10)
    torch.testing.assert_close(Probabilities().scores(Probabilities().answer(logits)).softmax(-1), logits.softmax(-1))
    assert torch.equal(Label().target_view(torch.tensor([2])), torch.eye(10)[[2]])


def test_unknown_output_mode_lists_the_choices(target):
    with pytest.raises(ConfigError, match="api.output='top5' is not one of the choices: probs, logits, label, rounded"):
        BlackBoxAPI(target, output="top5")


def test_query_rejects_non_image_input(target):
    with pytest.raises(ValueError, match=r"\(N, 1, 28, 28\)"):
        BlackBoxAPI(target).query(torch.rand(3, 784))
