"""A membership sweep's proxy jobs under ``hydra/launcher=vectorised``: their proxies distilled as one, each job with
its own API, queries and result; other methods and jobs differing in more than their seed run one by one."""

from __future__ import annotations

import pytest

from privacy_attacks.pipelines import run_attack
from tests.conftest import run_as_group

# Synthetic images (as the colour tests of test_attack.py, grey and smaller): a 200-member target, 50 + 50
# evaluation images, proxies of 100 images, a short attack classifier.
TINY = [
    "attack=membership",
    "data=synthetic",
    "data.source.train_size=800",
    "data.source.test_size=60",
    "data.val_size=60",
    "target.members=200",
    "target.max_epochs=2",
    "eval_members=50",
    "shadow_train_size=100",
    "methods.proxy.epochs=3",
]


def test_a_proxy_group_distils_every_jobs_proxies_once_each_job_with_its_own_queries(
    compose_attack, monkeypatch, caplog
):
    from privacy_attacks.attacks.membership import proxy

    points = [["method=proxy", "seed=0"], ["method=proxy", "seed=1"]]
    alone = [run_attack(compose_attack([*TINY, *point])) for point in points]
    stacked = []
    real = proxy.fit_students
    monkeypatch.setattr(proxy, "fit_students", lambda nets, *a, **k: stacked.append(len(nets)) or real(nets, *a, **k))
    configs = {number: compose_attack([*TINY, *point]) for number, point in enumerate(points)}
    with caplog.at_level("INFO"):
        grouped = run_as_group(configs, monkeypatch)
    assert "jobs 0, 1 fitted as one batch" in caplog.text
    assert stacked == [4]  # each job's proxy and reference proxy, in one fit
    assert caplog.text.count("proxies distilled in one batch with 1 other job") == 2
    for number, expected in enumerate(alone):
        # 100 + 100 proxy and reference images and the 100 evaluation images, asked of each job's own API
        assert grouped[number]["queries/used"] == expected["queries/used"] == 300
        assert grouped[number]["mia/members"] == grouped[number]["mia/nonmembers"] == 50
        for key in ("proxy/train_acc", "proxy/heldout_acc"):  # the same proxies, up to the order of sums
            assert grouped[number][key] == pytest.approx(expected[key], abs=0.05), key
        assert grouped[number]["mia/auc"] == pytest.approx(expected["mia/auc"], abs=0.05)


@pytest.mark.parametrize(
    ("second", "reason"),
    [
        (["method=loss", "seed=1"], "the jobs differ in more than their seed"),
        (["method=proxy", "seed=1", "eval_seed=1"], "the jobs differ in more than their seed"),
    ],
)
def test_jobs_that_cannot_share_their_proxies_run_one_by_one_with_the_reason(
    compose_attack, monkeypatch, caplog, second, reason
):
    configs = {0: compose_attack([*TINY, "method=proxy", "seed=0"]), 1: compose_attack([*TINY, *second])}
    with caplog.at_level("INFO"):
        results = run_as_group(configs, monkeypatch)
    assert f"run one by one ({reason})" in caplog.text
    assert all(result["mia/members"] == 50 for result in results.values())


def test_only_the_proxy_attack_distils_across_jobs(compose_attack, monkeypatch, caplog):
    configs = {number: compose_attack([*TINY, "method=loss", f"seed={number}"]) for number in (0, 1)}
    with caplog.at_level("INFO"):
        run_as_group(configs, monkeypatch)
    assert "run one by one (method=loss: only the proxy attack distils its proxies across jobs)" in caplog.text


@pytest.mark.parametrize("method", ["proxy", "shadow", "loss", "quantile"])
def test_building_a_method_leaves_the_jobs_config_as_it_was(compose_attack, method):
    """A group's jobs are compared by their configs: building a method must not resolve interpolations inside the
    nodes it points to (``attack_features.top_k.k: ${top_k}``) in the job's own config."""
    from omegaconf import OmegaConf

    from privacy_attacks.attacks.membership.attack import build_attack

    cfg = compose_attack(["attack=membership", f"method={method}", "methods.proxy.loss=${losses.kl}"])
    before = OmegaConf.to_container(cfg, resolve=False)
    build_attack(cfg)
    assert OmegaConf.to_container(cfg, resolve=False) == before
