"""The attacker's own randomness: one seed per random draw, derived from the attack's ``seed`` and the draw's role.

Every random choice on the attacker's side (the student's and proxies' initial weights, shadow models,
attack classifiers, the inversion decoder, query-pool shuffles, reconstruction restarts, jitter) takes its
seed from :func:`derive_seed` ``(seed, role, ...)``: a hash, so two roles never share a seed, and no
attacker draw starts from the global RNG state that the target's own training starts from (the target's
recipe seed is 0 by default, like the attack's ``seed``; without the hash the student would start from the
target's exact initial weights). The same ``seed`` gives the same numbers whatever is or is not cached,
because nothing here reads or depends on the global RNG state left behind by earlier work.

    >>> derive_seed(0, "student") != derive_seed(0, "proxy") != 0
    True
    >>> with seeded(0, "student"):
    ...     student = LeNet5()          # its initial weights depend on (0, "student") only
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager

import torch


def derive_seed(seed: int, *role: object) -> int:
    """A 63-bit seed for the draw ``role`` (e.g. ``"student"``, ``("shadow", 3)``) of the attack seeded by ``seed``.

    SHA-256 of ``[seed, *role]`` (as JSON, role parts as strings): stable across runs, machines and versions.
    """
    key = json.dumps([int(seed), *(str(part) for part in role)])
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") >> 1


def generator(seed: int, *role: object, device: str | torch.device = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with :func:`derive_seed` ``(seed, *role)``."""
    return torch.Generator(device=device).manual_seed(derive_seed(seed, *role))


@contextmanager
def seeded(seed: int, *role: object) -> Iterator[int]:
    """Run the block with the global torch RNGs (CPU and CUDA) seeded by :func:`derive_seed` ``(seed, *role)``,
    and restore them afterwards, so the block neither depends on nor moves the caller's RNG state.

    For draws made by code that takes no generator (``nn.Module`` initialisers, Lightning fits).
    Yields the derived seed.
    """
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    derived = derive_seed(seed, *role)
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(derived)
        yield derived
