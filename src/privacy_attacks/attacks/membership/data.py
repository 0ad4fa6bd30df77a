"""Who is a member: the target's training subset, the evaluation set and the attacker's own data.

All three come from the 60k MNIST training images (``split_training_indices``): the target
trains on ``members`` images; the rest of the pool (minus the validation split) are images it
never saw. From them, drawn by ``eval_seed``:

- the **evaluation set**: ``eval_members`` members and as many non-members (label convention:
  member = 1, non-member = 0). No attack is ever fitted on it: attacks see its images and the
  target's answers, never its membership labels;
- the **attacker's own data**: ``attacker_size`` non-member images (``None``: all that are left)
  starting at position ``attacker_offset`` of the shuffled non-member pool (after the evaluation non-members, which
  take positions ``0 .. eval_members - 1``), with their labels. Proxy, shadow models and the
  attack classifiers are fitted on it only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from privacy_attacks.data.mnist import split_training_indices
from privacy_attacks.errors import ConfigError

MEMBER, NONMEMBER = 1, 0


@dataclass(frozen=True)
class MembershipSplit:
    """Dataset indices (into the MNIST training set) of each role, all long tensors.

    Attributes:
        members: (M,) the target's training images.
        eval_indices: (2E,) the evaluation set: E members then E non-members.
        eval_membership: (2E,) long, 1 = member, 0 = non-member (never shown to an attack).
        attacker: (A,) the attacker's own images (non-members of the target, disjoint from the evaluation set).
    """

    members: Tensor
    eval_indices: Tensor
    eval_membership: Tensor
    attacker: Tensor


def membership_split(
    val_size: int,
    split_seed: int,
    members: int,
    eval_members: int,
    attacker_size: int | None,
    attacker_offset: int,
    eval_seed: int,
    total: int = 60_000,
) -> MembershipSplit:
    """The seeded split described in the module docstring.

    Raises :class:`ConfigError` before any work when the sizes do not fit the data or the
    evaluation set would overlap the attacker's data.
    """
    for key, value in {"eval_members": eval_members, "attacker_size": attacker_size}.items():
        if key == "attacker_size" and value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ConfigError(f"{key}={value!r} is not allowed: it must be an integer > 0.")
    split = split_training_indices(val_size, split_seed, members, total)
    pool = split["nonmember"]
    if attacker_size is None and isinstance(attacker_offset, int):  # every non-member after the offset (prefix-stable)
        attacker_size = len(pool) - attacker_offset
        if attacker_size <= 0:
            raise ConfigError(
                f"attacker_offset={attacker_offset} leaves the attacker no images: the non-member pool of "
                f"target.members={members} and data.val_size={val_size} has only {len(pool)} images."
            )
    if eval_members > members:
        raise ConfigError(
            f"eval_members={eval_members} is not allowed: the target has only target.members={members} members."
        )
    if not isinstance(attacker_offset, int) or attacker_offset < eval_members:
        raise ConfigError(
            f"attacker_offset={attacker_offset!r} would make the evaluation set overlap the attacker's data: the "
            f"evaluation non-members are positions 0..{eval_members - 1} of the non-member pool, so "
            f"attacker_offset must be >= eval_members={eval_members}."
        )
    if attacker_offset + attacker_size > len(pool):
        raise ConfigError(
            f"attacker_offset + attacker_size = {attacker_offset + attacker_size} is more than the {len(pool)} "
            f"non-member images left by target.members={members} and data.val_size={val_size}; lower attacker_size."
        )
    generator = torch.Generator().manual_seed(eval_seed)
    shuffled_pool = pool[torch.randperm(len(pool), generator=generator)]
    eval_member_idx = split["train"][torch.randperm(members, generator=generator)[:eval_members]]
    eval_indices = torch.cat([eval_member_idx, shuffled_pool[:eval_members]])
    membership = torch.cat([torch.full((eval_members,), MEMBER), torch.full((eval_members,), NONMEMBER)])
    attacker = shuffled_pool[attacker_offset : attacker_offset + attacker_size]
    return MembershipSplit(split["train"], eval_indices, membership.long(), attacker)
