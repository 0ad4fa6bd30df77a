"""The student's unlabelled images (FixMatch consistency): the strong view, the loss and its confidence mask by hand,
the images taken after the queried ones and never sent to the API, bad settings before any work."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from privacy_attacks.attacks.stealing.semi_supervised import FixMatch, strong_augment
from privacy_attacks.errors import ConfigError
from privacy_attacks.pipelines import run_attack


def test_the_strong_view_is_seeded_cuts_out_a_square_and_keeps_the_shape():
    x = torch.ones(5, 3, 12, 12)
    view = strong_augment(x, torch.Generator().manual_seed(0), degrees=0.0, scale=0.0, translate=0, erase=4)
    assert view.shape == x.shape
    assert ((view == 0).flatten(1).sum(1) == 3 * 16).all()  # one 4 x 4 square per image, every channel, no more
    again = strong_augment(x, torch.Generator().manual_seed(0), degrees=0.0, scale=0.0, translate=0, erase=4)
    assert torch.equal(view, again)
    identity = strong_augment(x, torch.Generator().manual_seed(0), degrees=0.0, scale=0.0, translate=0, erase=0)
    assert torch.allclose(identity, x)  # no rotation, scale, translation or cut-out: the image itself
    moved = strong_augment(x, torch.Generator().manual_seed(1), degrees=30.0, scale=0.2, translate=3, erase=0)
    assert not torch.allclose(moved, x)


class Fixed(nn.Module):
    """A 'student' answering the same logits for every image."""

    def __init__(self, logits: list[list[float]]):
        super().__init__()
        self.logits = nn.Parameter(torch.tensor(logits))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits[: len(x)]


def test_the_loss_is_the_cross_entropy_of_the_confident_pseudo_labels_over_the_whole_batch():
    logits = [[4.0, 0.0], [0.0, 0.1]]  # image 0 confident (p = 0.982) in class 0, image 1 not (p = 0.525)
    consistency = FixMatch(images=10, threshold=0.9, weight=2.0, target="hard")
    loss, kept = consistency.loss(Fixed(logits), torch.rand(2, 1, 8, 8), torch.Generator().manual_seed(0))
    confident = torch.nn.functional.cross_entropy(torch.tensor([logits[0]]), torch.tensor([0]))
    assert kept.item() == 0.5
    assert loss.item() == pytest.approx(2.0 * confident.item() / 2)  # the mean over both, the second counting 0
    assert (
        FixMatch(images=10, threshold=0.99, target="hard").loss(
            Fixed(logits), torch.rand(2, 1, 8, 8), torch.Generator()
        )[1]
        == 0
    )


def test_the_soft_target_is_the_weak_views_whole_distribution():
    logits = [[1.0, 0.0, 0.0], [0.0, 0.2, 0.0]]  # top probabilities 0.576 and 0.378
    consistency = FixMatch(images=10, threshold=0.5, target="soft")
    loss, kept = consistency.loss(Fixed(logits), torch.rand(2, 1, 8, 8), torch.Generator().manual_seed(0))
    weak = torch.tensor(logits).softmax(-1)
    entropy = -(weak[0] * weak[0].log()).sum()  # the strong view answers the same: its cross-entropy is the entropy
    assert kept.item() == 0.5 and loss.item() == pytest.approx(entropy.item() / 2)
    with pytest.raises(ConfigError, match="student.unlabelled.target='mixed' is not one of the choices: hard, soft"):
        FixMatch(target="mixed")


def test_a_step_draws_ratio_unlabelled_images_per_queried_one():
    pool = torch.arange(50.0).view(50, 1, 1, 1)
    batch = FixMatch(images=50, ratio=3).batch(pool, 4, torch.Generator().manual_seed(0))
    assert batch.shape == (12, 1, 1, 1) and set(batch.flatten().tolist()) <= set(range(50))
    assert not FixMatch(images=0).active and not FixMatch(images=10, weight=0.0).active


TINY = [
    "attack=distillation",
    "data=synthetic",
    "data.source.train_size=300",
    "data.source.test_size=60",
    "data.val_size=60",
    "target.members=200",
    "target.max_epochs=1",
    "query_budget=50",
    "schedule.steps=6",
]


def test_the_student_learns_from_pool_images_after_the_queried_ones_without_querying_them(compose_attack, monkeypatch):
    from privacy_attacks.attacks.stealing import attack

    seen = {}
    real_fit = attack.fit_student

    def spy(net, images, answers, *args, **kwargs):
        seen.update(images=images, unlabelled=kwargs.get("unlabelled"), consistency=kwargs.get("consistency"))
        return real_fit(net, images, answers, *args, **kwargs)

    kept = []
    real_loss = FixMatch.loss
    monkeypatch.setattr(FixMatch, "loss", lambda self, *a: kept.append(1) or real_loss(self, *a))
    monkeypatch.setattr(attack, "fit_student", spy)
    cfg = compose_attack([*TINY, "student.unlabelled.images=80"])
    metrics = run_attack(cfg)
    assert metrics["queries/used"] == 50  # the unlabelled images cost no query
    pool = attack.query_pool(cfg).take(130, seed=attack.derive_seed(cfg.seed, "queries"))
    assert torch.equal(seen["images"], pool[:50]) and torch.equal(seen["unlabelled"], pool[50:])
    assert seen["consistency"].images == 80 and len(kept) == 6  # its loss at every step
    off = run_attack(compose_attack(TINY))
    assert off["queries/used"] == 50 and len(kept) == 6  # images: 0, no unlabelled loss


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["student.unlabelled.images=300"], r"student.unlabelled.images=300 is not allowed: .* at most"),
        (["student.unlabelled.images=-1"], r"student.unlabelled.images=-1 is not allowed"),
        (["student.unlabelled.threshold=1.5"], r"student.unlabelled.threshold=1.5 .* \[0, 1\)"),
        (["student.unlabelled.ratio=0"], r"student.unlabelled.ratio=0 is not allowed"),
        (
            ["queries=generator", "query_budget=2000000", "student.unlabelled.images=10"],
            "student.unlabelled.images must be 0 with queries=generator",
        ),
    ],
)
def test_bad_unlabelled_settings_stop_before_any_work(compose_attack, tmp_path, overrides, message):
    cfg = compose_attack([*TINY, *overrides, f"paths.cache_dir={tmp_path}/empty"])
    with pytest.raises(ConfigError, match=message):
        run_attack(cfg)
    assert not (tmp_path / "empty").exists()
