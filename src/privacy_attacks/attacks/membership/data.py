"""Who is a member: the target's training subset, the two evaluation sets and the attacker's own data.

All of them come from the training images of the configured dataset (``data=``; MNIST's 60,000 by default), split
as the data module splits them (:func:`~privacy_attacks.data.tensors.split_indices`, ``data.val_size`` and
``data.split_seed``): the target trains on ``members`` images; the rest of the pool (minus the validation split)
are images it never saw. From them, drawn by ``eval_seed``:

- two disjoint **evaluation sets** of ``eval_members`` members and ``eval_nonmembers`` non-members each
  (``None``: as many as members; more non-members put more false positives under a low FPR; label
  convention: member = 1, non-member = 0): ``report``, where numbers are reported, and ``tune``, where
  settings are chosen (``eval_set=``). Each is shuffled, so its order says nothing about membership.
  No attack is ever fitted on an evaluation set: attacks see its images and the target's answers,
  never its membership labels or its dataset indices;
- the **attacker's own data**: ``attacker_size`` non-member images (``None``: all that are left)
  starting at position ``attacker_offset`` of the shuffled non-member pool (``None``: right after the
  evaluation non-members of both sets: report's take positions ``0 .. eval_nonmembers - 1``, tune's
  ``eval_nonmembers .. 2 * eval_nonmembers - 1``), with their labels. Proxy, shadow models and the attack
  classifiers are fitted on it only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from privacy_attacks.data.tensors import split_indices
from privacy_attacks.errors import ConfigError, is_integer, require_int

MEMBER, NONMEMBER = 1, 0
EVAL_SETS = ("report", "tune")


@dataclass(frozen=True)
class MembershipSplit:
    """Dataset indices (into the dataset's training set) of each role, all long tensors.

    Attributes:
        members: (M,) the target's training images.
        eval_indices: (E + F,) the chosen evaluation set, E members and F non-members in a seeded random order.
        eval_membership: (E + F,) long, 1 = member, 0 = non-member (never shown to an attack).
        attacker: (A,) the attacker's own images (non-members of the target, disjoint from both evaluation sets).
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
    attacker_offset: int | None,
    eval_seed: int,
    total: int,
    eval_set: str = "report",
    eval_nonmembers: int | None = None,
    member_offset: int = 0,
) -> MembershipSplit:
    """The seeded split described in the module docstring, of a dataset of ``total`` training images, with the
    evaluation set ``eval_set`` (report or tune) of ``eval_members`` members and ``eval_nonmembers`` non-members
    (None: ``eval_members``); the target's ``members`` start at ``member_offset`` of the pool, as its data module
    takes them.

    Raises :class:`ConfigError` before any work when the sizes do not fit the data or an evaluation
    set would overlap the other or the attacker's data.
    """
    if eval_set not in EVAL_SETS:
        raise ConfigError(f"eval_set={eval_set!r} is not one of the choices: {', '.join(EVAL_SETS)}.")
    require_int(eval_members, "eval_members")
    require_int(eval_seed, "eval_seed", minimum=None)
    require_int(eval_nonmembers, "eval_nonmembers", null_means="as many as eval_members")
    nonmembers = eval_members if eval_nonmembers is None else eval_nonmembers
    if attacker_size is not None:
        require_int(attacker_size, "attacker_size")
    split = split_indices(val_size, split_seed, members, total, member_offset, key="target")
    pool = split["nonmember"]
    if 2 * eval_members > members:
        raise ConfigError(
            f"eval_members={eval_members} is not allowed: the report and tune evaluation sets take {eval_members} "
            f"members each, and the target has only target.members={members} (use eval_members <= {members // 2})."
        )
    if 2 * nonmembers > len(pool):
        raise ConfigError(
            f"eval_nonmembers={nonmembers} is not allowed: the report and tune evaluation sets take {nonmembers} "
            f"non-members each, and target.members={members} with data.val_size={val_size} leaves only {len(pool)} "
            f"(use eval_nonmembers <= {len(pool) // 2})."
        )
    if attacker_offset is None:
        attacker_offset = 2 * nonmembers
    if not is_integer(attacker_offset) or attacker_offset < 2 * nonmembers:
        raise ConfigError(
            f"attacker_offset={attacker_offset!r} would make the evaluation sets overlap the attacker's data: the "
            f"evaluation non-members are positions 0..{2 * nonmembers - 1} of the non-member pool, so "
            f"attacker_offset must be >= 2 * eval_nonmembers = {2 * nonmembers} (or null)."
        )
    if attacker_size is None:  # every non-member after the offset (prefix-stable)
        attacker_size = len(pool) - attacker_offset
        if attacker_size <= 0:
            raise ConfigError(
                f"attacker_offset={attacker_offset} leaves the attacker no images: the non-member pool of "
                f"target.members={members} and data.val_size={val_size} has only {len(pool)} images."
            )
    if attacker_offset + attacker_size > len(pool):
        raise ConfigError(
            f"attacker_offset + attacker_size = {attacker_offset + attacker_size} is more than the {len(pool)} "
            f"non-member images left by target.members={members} and data.val_size={val_size}; lower attacker_size."
        )
    generator = torch.Generator().manual_seed(eval_seed)
    shuffled_pool = pool[torch.randperm(len(pool), generator=generator)]
    shuffled_members = split["train"][torch.randperm(members, generator=generator)]
    first, first_out = (0, 0) if eval_set == "report" else (eval_members, nonmembers)
    eval_indices = torch.cat(
        [shuffled_members[first : first + eval_members], shuffled_pool[first_out : first_out + nonmembers]]
    )
    membership = torch.cat([torch.full((eval_members,), MEMBER), torch.full((nonmembers,), NONMEMBER)]).long()
    order = torch.randperm(eval_members + nonmembers, generator=generator)  # no order that tells members apart
    attacker = shuffled_pool[attacker_offset : attacker_offset + attacker_size]
    return MembershipSplit(split["train"], eval_indices[order], membership[order], attacker)
