"""The attacker's own randomness: derived seeds per role, and blocks that leave the global RNG alone."""

from __future__ import annotations

import lightning as L
import torch
from omegaconf import open_dict

from privacy_attacks.pipelines import run_attack
from privacy_attacks.seeding import derive_seed, generator, seeded
from privacy_attacks.training import build_net


def test_derived_seeds_are_stable_distinct_per_role_and_never_the_seed_itself():
    assert derive_seed(0, "student") == derive_seed(0, "student")
    roles = [("student",), ("proxy",), ("reference_proxy",), ("shadow", 0), ("shadow", 1), ("queries",)]
    seeds = {derive_seed(seed, *role) for seed in range(3) for role in roles}
    assert len(seeds) == 3 * len(roles)
    assert not seeds & {0, 1, 2}
    assert all(0 <= seed < 2**63 for seed in seeds)
    assert derive_seed(0, "shadow", 1) == derive_seed(0, "shadow", "1")  # role parts are read as text


def test_generators_follow_their_role():
    a, b = generator(0, "init"), generator(0, "init")
    assert torch.equal(torch.rand(5, generator=a), torch.rand(5, generator=b))
    assert not torch.equal(
        torch.rand(5, generator=generator(0, "init")), torch.rand(5, generator=generator(0, "jitter"))
    )


def test_seeded_blocks_ignore_and_restore_the_global_state():
    draws = []
    for global_seed in (0, 99):
        torch.manual_seed(global_seed)
        before = torch.get_rng_state()
        with seeded(3, "student") as derived:
            draws.append(torch.rand(4))
        assert derived == derive_seed(3, "student")
        assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(draws[0], draws[1])


BUILT: list[torch.nn.Module] = []


def build_from_the_global_rng(cfg, target):
    """An attack entry that builds the target's architecture from the global RNG, as code without ``seeded`` would."""
    BUILT.append(build_net(cfg.target, "target"))
    return {}


def test_an_attacks_global_rng_never_starts_a_network_at_the_targets_initial_weights(compose_attack):
    tiny = ["data=synthetic", "data.source.train_size=300", "data.source.test_size=60", "data.val_size=60"]
    cfg = compose_attack(
        ["attack=distillation", *tiny, "target.members=100", "target.max_epochs=1", "query_budget=50", "seed=0"]
    )
    assert cfg.target.seed == cfg.seed  # the same integer seeds the target's recipe and the attack
    with open_dict(cfg):
        cfg.attack.entry = f"{__name__}.build_from_the_global_rng"
    BUILT.clear()
    run_attack(cfg)
    run_attack(cfg)
    L.seed_everything(cfg.target.seed, verbose=False)  # as fit_classifier starts the target's training
    initial = build_net(cfg.target, "target").state_dict()
    first, again = (net.state_dict() for net in BUILT)
    assert all(torch.equal(first[name], again[name]) for name in first)  # still a function of the attack's seed
    assert not any(torch.equal(first[name], initial[name]) for name in first if name.endswith("weight"))
