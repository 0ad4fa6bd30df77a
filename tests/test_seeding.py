"""The attacker's own randomness: derived seeds per role, and blocks that leave the global RNG alone."""

from __future__ import annotations

import torch

from privacy_attacks.seeding import derive_seed, generator, seeded


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
