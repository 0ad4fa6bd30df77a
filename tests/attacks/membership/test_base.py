"""The membership-attack contract on tiny synthetic data: every method scores every image, none is fitted on
evaluation images, sizes are checked."""

from __future__ import annotations

import dataclasses
import logging

import pytest
import torch
from hydra.utils import instantiate

from privacy_attacks.attacks.membership import proxy, shokri
from privacy_attacks.attacks.membership.attack import build_attack
from privacy_attacks.attacks.membership.augment import translate, translations
from privacy_attacks.attacks.membership.base import AttackContext, MembershipAttack
from privacy_attacks.attacks.membership.label_only import LabelOnlyAugmentAttack, LabelOnlyBoundaryAttack
from privacy_attacks.attacks.membership.lira import LiRA
from privacy_attacks.attacks.membership.metrics import membership_metrics
from privacy_attacks.attacks.membership.proxy import ProxyAttack
from privacy_attacks.attacks.membership.quantile import QuantileRegressionAttack
from privacy_attacks.attacks.membership.shadow_models import (
    provision_shadow_models,
)
from privacy_attacks.attacks.membership.shokri import ShadowAttack
from privacy_attacks.attacks.membership.threshold import ThresholdAttack
from privacy_attacks.blackbox import BlackBoxAPI
from privacy_attacks.defenses import Rounding, TopK
from privacy_attacks.errors import ConfigError
from tests.attacks.membership.conftest import N_ATTACKER, N_EVAL, TRAIN_SIZE, features, untrained_target
from tests.conftest import attack_config


def _contains_any(images, candidates) -> bool:
    return bool((images[:, None] == candidates[None]).flatten(2).all(dim=2).any())


def test_context_holds_no_membership_labels_and_no_dataset_indices():
    names = {f.name for f in dataclasses.fields(AttackContext)}
    assert not any("member" in name or "indices" in name for name in names)


SCORES = instantiate(attack_config("membership").scores)  # the config's score nodes, built
METHODS = {
    "loss": lambda: ThresholdAttack("loss", SCORES, reference_size=20),
    "confidence": lambda: ThresholdAttack("confidence", SCORES, reference_size=20),
    "entropy": lambda: ThresholdAttack("entropy", SCORES, reference_size=20),
    "modified_entropy": lambda: ThresholdAttack("modified_entropy", SCORES, reference_size=20),
    "proxy": lambda: ProxyAttack(**features("sorted", "label", "loss"), epochs=2, reference=True),
    "shadow": lambda: ShadowAttack(**features("sorted", "label", "loss"), num_shadows=2, epochs=2, per_class=True),
    "lira": lambda: LiRA(num_shadows=4, online=True),
    "lira_fixed": lambda: LiRA(num_shadows=2, online=True, fixed_variance=True),
    "lira_offline": lambda: LiRA(num_shadows=2, online=False),
    "quantile": lambda: QuantileRegressionAttack(SCORES, regression_size=30, epochs=2, batch_size=8),
    "label_only_augment": lambda: LabelOnlyAugmentAttack(max_shift=1, noise_copies=2, reference_size=20),
    "label_only_boundary": lambda: LabelOnlyBoundaryAttack(
        directions=2, search_steps=3, refine_steps=1, gradient_queries=4, reference_size=20
    ),
}


@pytest.mark.parametrize("method", METHODS)
def test_each_method_scores_every_evaluation_image(method, context):
    output = METHODS[method]()(context)
    assert output.scores.shape == (N_EVAL,) and torch.isfinite(output.scores).all()
    assert set(output.predictions.tolist()) <= {0, 1}
    assert context.api.queries_used >= N_EVAL


@pytest.mark.parametrize(
    ("method", "line"),
    [
        ("proxy", "attack classifier: epoch 2/2, attack_train/loss "),
        ("quantile", "quantile regressor: epoch 2/2, quantile_train/nll "),
    ],
)
def test_the_attacks_own_fits_write_their_epochs_to_the_log(method, line, context, caplog):
    """With the progress bar off (log files, joblib workers) a trained attack's fit still shows its epochs."""
    with caplog.at_level(logging.INFO, logger="privacy_attacks.callbacks.epoch_log"):
        METHODS[method]()(context)
    assert any(message.startswith(line) for message in caplog.messages)


@pytest.mark.parametrize("defense", [None, Rounding(2), TopK(1)])
@pytest.mark.parametrize("output", ["probs", "rounded", "label"])
def test_shadow_log_probs_read_the_attackers_models_as_the_api_would_answer_them(context, defense, output):
    net = untrained_target()
    images = context.eval_images
    api = BlackBoxAPI(net, output=output, defense=defense)
    served = api.output.scores(api.query(images)).double().log_softmax(dim=-1)
    own = dataclasses.replace(context, api=BlackBoxAPI(net, output=output), shadow_defense=defense)
    torch.testing.assert_close(own.shadow_log_probs(net(images)), served)


def test_lira_with_the_apis_defense_on_its_shadow_models_scores_every_image(context):
    defended = dataclasses.replace(
        context, api=BlackBoxAPI(untrained_target(), output="probs", defense=Rounding(2)), shadow_defense=Rounding(2)
    )
    output = LiRA(num_shadows=4, online=True)(defended)
    assert output.scores.shape == (N_EVAL,) and torch.isfinite(output.scores).all()


def test_trained_attacks_are_never_fitted_on_evaluation_images(context, monkeypatch):
    fitted_images = []
    real_distil, real_provision = proxy.distil, provision_shadow_models

    def spy_distil(api, images, *args, **kwargs):
        fitted_images.append(images)
        return real_distil(api, images, *args, **kwargs)

    def spy_provision(recipe, images, labels, train_indices, *args):
        fitted_images.append(images[train_indices.unique()])
        return real_provision(recipe, images, labels, train_indices, *args)

    monkeypatch.setattr(proxy, "distil", spy_distil)
    monkeypatch.setattr(shokri, "provision_shadow_models", spy_provision)
    ProxyAttack(**features("sorted", "loss"), epochs=1)(context)
    ShadowAttack(**features("sorted", "label", "loss"), num_shadows=2, epochs=1)(context)
    LiRA(num_shadows=2, online=False)(context)
    assert len(fitted_images) == 2 + 1 + 1  # proxy + reference, Shokri's shadows, offline LiRA's shadows
    for images in fitted_images:
        assert not _contains_any(images, context.eval_images)


def _permuted(context, order):
    return dataclasses.replace(
        context,
        eval_images=context.eval_images[order],
        eval_labels=context.eval_labels[order],
        api=BlackBoxAPI(untrained_target(), output="probs"),
    )


@pytest.mark.parametrize(
    "method",
    ["loss", "modified_entropy", "shadow", "lira_offline", "quantile", "label_only_augment", "label_only_boundary"],
)
def test_permuting_the_evaluation_set_permutes_the_scores(method, context):
    order = torch.randperm(N_EVAL, generator=torch.Generator().manual_seed(1))
    scores = METHODS[method]()(context).scores
    permuted = METHODS[method]()(_permuted(context, order)).scores
    torch.testing.assert_close(permuted, scores[order])
    membership = (torch.arange(N_EVAL) % 2).long()
    predictions = torch.zeros(N_EVAL, dtype=torch.long)
    assert membership_metrics(permuted, membership[order], predictions) == membership_metrics(
        scores, membership, predictions
    )


def test_attackers_data_too_small_is_a_config_error():
    with pytest.raises(ConfigError, match="attacker_size"):
        ProxyAttack(**features("sorted", "loss")).check_sizes(1000, 2000, 2500)
    with pytest.raises(ConfigError, match="attacker_size"):
        LiRA(online=False).check_sizes(1000, 2000, 1000)


@pytest.mark.parametrize("method", list(attack_config("membership").methods))
def test_every_configured_method_is_a_membership_attack(compose_attack, method):
    assert isinstance(build_attack(compose_attack(["attack=membership", f"method={method}"])), MembershipAttack)


def test_a_method_node_that_builds_something_else_is_a_config_error(compose_attack):
    cfg = compose_attack(["attack=membership", "+methods.other._target_=builtins.dict", "method=other"])
    with pytest.raises(ConfigError, match="not a membership attack"):
        build_attack(cfg)


def test_quantile_regression_standardises_each_score_by_its_own_non_member_prediction(context, monkeypatch):
    """The regression model sees the attacker's images only; an evaluation score far above its image's predicted
    non-member distribution scores high, and the hard decision flags z above the normal's 1 - fpr quantile."""
    attack = QuantileRegressionAttack(SCORES, regression_size=30, epochs=1, batch_size=8, fpr=0.05)
    fitted = []
    real_fit = attack.fit
    monkeypatch.setattr(attack, "fit", lambda ctx, images, *a: fitted.append(images) or real_fit(ctx, images, *a))
    output = attack(context)
    (images,) = fitted
    assert len(images) == 30 and not _contains_any(images, context.eval_images)
    assert output.info["attack/regression_size"] == 30
    assert torch.equal(output.predictions, (output.scores > 1.6448536269514722).long())
    assert context.api.queries_used == 30 + N_EVAL == attack.queries_needed(TRAIN_SIZE, N_EVAL, N_ATTACKER)
    model = real_fit(context, images, context.attacker_labels[:30], torch.randn(30).double(), 10)
    scores = torch.zeros(5, dtype=torch.float64)
    z = model.standardised_scores(context.eval_images[:5], context.eval_labels[:5], scores)
    higher = model.standardised_scores(context.eval_images[:5], context.eval_labels[:5], scores + 1)
    assert torch.all(higher > z)  # monotone in the score, per image


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"score": "nope"}, "methods.quantile.score"),
        ({"epochs": 0}, "methods.quantile.epochs"),
        ({"fpr": 1.0}, "methods.quantile.fpr=1.0"),
        ({"lr": -1}, "methods.quantile.lr"),
    ],
)
def test_quantile_regression_refuses_bad_settings(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        QuantileRegressionAttack(SCORES, **kwargs)


def test_translations_move_the_image_and_zero_the_uncovered_border():
    assert translations(1) == [(0, 0), (-1, 0), (0, -1), (0, 1), (1, 0)] and len(translations(2)) == 13
    image = torch.arange(16.0).view(1, 1, 4, 4)
    down = translate(image, (1, 0))
    assert torch.equal(down[0, 0, 1:], image[0, 0, :3]) and not down[0, 0, 0].any()
    left = translate(image, (0, -1))
    assert torch.equal(left[0, 0, :, :3], image[0, 0, :, 1:]) and not left[0, 0, :, 3].any()


def test_label_only_augment_reads_labels_only_and_counts_every_copy(context):
    """The score is the fraction of copies labelled right; the same under any output mode (labels only)."""
    attack = LabelOnlyAugmentAttack(max_shift=1, noise_copies=1, reference_size=10)
    output = attack(context)
    assert attack.copies == 6 and context.api.queries_used == 6 * (N_EVAL + 10)
    assert context.api.queries_used == attack.queries_needed(TRAIN_SIZE, N_EVAL, N_ATTACKER)
    assert set((output.scores * 6).round().tolist()) <= set(range(7))
    labels_only = dataclasses.replace(context, api=BlackBoxAPI(untrained_target(), output="label"))
    torch.testing.assert_close(attack(labels_only).scores, output.scores)
    with pytest.raises(ConfigError, match="at least two copies"):
        LabelOnlyAugmentAttack(max_shift=0, noise_copies=0)


class _Threshold(torch.nn.Module):
    """Labels 1 where the mean pixel exceeds ``level``, else 0: the boundary is the hyperplane mean(x) = level."""

    def __init__(self, level: float):
        super().__init__()
        self.level = level

    def forward(self, images):
        above = images.flatten(1).mean(dim=1) > self.level
        return torch.stack([(~above).float(), above.float()], dim=1) * 10


@pytest.mark.parametrize("refine_steps", [0, 3])
def test_label_only_boundary_finds_the_distance_to_a_known_boundary(context, refine_steps):
    """Against a half-space classifier the true L2 distance is |mean(x) - level| x sqrt(D): the search never goes
    below it (every reported point is labelled otherwise), HopSkipJump's steps come closer than random directions
    alone, and wrongly labelled images score 0."""
    pixels = 16
    images = torch.full((6, 1, 4, 4), 0.31) + 0.05 * torch.arange(6.0).view(-1, 1, 1, 1)  # means 0.31 ... 0.56
    labels = torch.tensor([1, 0, 0, 0, 1, 1])  # the first labelled wrongly, the others as the classifier does
    api = BlackBoxAPI(_Threshold(0.5), output="label")
    own = dataclasses.replace(context, api=api, eval_images=images, eval_labels=labels)
    attack = LabelOnlyBoundaryAttack(directions=4, search_steps=12, max_radius=4.0, refine_steps=refine_steps)
    scores = attack.scores(own, images, labels, "eval")
    true = (images.flatten(1).mean(dim=1) - 0.5).abs() * pixels**0.5
    assert scores[0] == 0
    assert (scores[1:] >= true[1:].double() - 1e-4).all()
    assert api.queries_used == attack.queries_per_image * 6
    if refine_steps:
        random_only = LabelOnlyBoundaryAttack(directions=4, search_steps=12, max_radius=4.0, refine_steps=0)
        assert (scores[1:] <= random_only.scores(own, images, labels, "eval")[1:] + 1e-6).all()
        assert (scores[1:] <= 1.5 * true[1:].double()).all()


def test_label_only_boundary_counts_its_queries_and_reads_labels_only(context):
    attack = LabelOnlyBoundaryAttack(
        directions=2, search_steps=3, refine_steps=2, gradient_queries=4, reference_size=10
    )
    output = attack(context)
    assert attack.queries_per_image == 1 + 2 * 4 + 2 * (4 + 4)
    assert context.api.queries_used == attack.queries_needed(TRAIN_SIZE, N_EVAL, N_ATTACKER)
    labels_only = dataclasses.replace(context, api=BlackBoxAPI(untrained_target(), output="label"))
    torch.testing.assert_close(attack(labels_only).scores, output.scores)
    assert (output.scores >= 0).all() and (output.scores <= 10.0).all()


def test_a_calibrated_boundary_attack_resolves_auto_variance_by_its_shadow_count_and_records_it(context):
    assert LabelOnlyBoundaryAttack(calibration="offline", num_shadows=64).fixed_variance is False
    attack = LabelOnlyBoundaryAttack(
        directions=2, search_steps=3, refine_steps=0, calibration="offline", num_shadows=4, fixed_variance="auto"
    )
    output = attack(context)
    assert attack.fixed_variance is True and output.info["lira/fixed_variance"] == 1.0
    with pytest.raises(ConfigError, match="^fixed_variance="):
        LabelOnlyBoundaryAttack(calibration="offline", fixed_variance="sometimes")
