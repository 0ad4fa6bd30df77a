"""Splits and batches of image tensors kept on the training device, for any dataset.

The training set is split by a seeded permutation (:func:`split_indices`: validation, members, non-members);
batches are sliced from tensors already on the device (:class:`TensorBatches`) or drawn by Poisson sampling for
DP-SGD (:class:`PoissonBatches`), each epoch's order seeded from the run's seed and the epoch (:func:`epoch_seed`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from privacy_attacks.errors import ConfigError, is_integer, require_choice, require_int
from privacy_attacks.seeding import derive_seed


def split_indices(
    val_size: int, split_seed: int, members: int | None, total: int, member_offset: int = 0, key: str | None = None
) -> dict[str, Tensor]:
    """Seeded split of the ``total`` training indices of a dataset.

    Returns ``val`` (the first ``val_size`` of a seeded permutation), ``train`` (``members`` images of
    the rest, from position ``member_offset`` on; all of it when ``members`` is None) and ``nonmember``
    (the rest of the pool, never trained on). The three are disjoint. :class:`ConfigError` (one line, naming the
    training set's size) when the sizes do not fit, naming ``members`` and ``member_offset`` as keys of the recipe
    ``key`` (e.g. ``judge``) when given.
    """
    prefix = f"{key}." if key else ""
    pool_size = total - val_size if is_integer(val_size) else 0
    if not is_integer(val_size) or not 0 < val_size < total:
        raise ConfigError(
            f"data.val_size={val_size!r} is not allowed: it must be an integer between 1 and {total - 1} "
            f"(the training set has {total:,} images)."
        )
    if not is_integer(member_offset) or not 0 <= member_offset < pool_size:
        raise ConfigError(
            f"{prefix}member_offset={member_offset!r} is not allowed: it must be an integer in [0, {pool_size})."
        )
    if members is not None and not (is_integer(members) and 0 < members <= pool_size - member_offset):
        raise ConfigError(
            f"{prefix}members={members!r} is not allowed: it must be an integer between 1 and "
            f"{pool_size - member_offset} "
            f"({total:,} training images minus val_size={val_size} minus member_offset={member_offset})."
        )
    require_int(split_seed, "data.split_seed", minimum=None)
    generator = torch.Generator().manual_seed(split_seed)
    order = torch.randperm(total, generator=generator)
    pool = order[val_size:]
    end = pool_size if members is None else member_offset + members
    return {
        "val": order[:val_size],
        "train": pool[member_offset:end],
        "nonmember": torch.cat([pool[:member_offset], pool[end:]]),
    }


BATCH_ORDERS = ("hashed", "consecutive")


def epoch_seed(seed: int, epoch: int, batch_order: str = "hashed") -> int:
    """The seed of epoch ``epoch``'s batch order (or Poisson masks) in a run seeded by ``seed``.

    ``hashed``: :func:`~privacy_attacks.seeding.derive_seed` ``(seed, "batch_order", epoch)`` (63 bits), so no two
    (seed, epoch) pairs share an order. ``consecutive``: ``seed + epoch``, the order of every model this project
    measured before: seed s at epoch e + 1 then replays seed s + 1 at epoch e, so neighbouring seeds are not
    independent replicates; kept to reproduce those numbers (``data.batch_order=consecutive``).
    """
    if batch_order == "consecutive":
        return int(seed) + int(epoch)
    return derive_seed(seed, "batch_order", epoch)


class _EpochBatches:
    """Base of the batch iterables: each pass draws from a generator seeded by :func:`epoch_seed` of the pass's
    epoch. The epoch is ``epoch_of()`` when given (the trainer's ``current_epoch``, so a fit resumed from a
    checkpoint continues the sequence of the uninterrupted one), else the count of passes so far."""

    def __init__(self, seed: int, batch_order: str, epoch_of: Callable[[], int] | None):
        require_choice(batch_order, BATCH_ORDERS, "data.batch_order")
        self.seed, self.batch_order, self.epoch_of = seed, batch_order, epoch_of
        self.epoch = 0

    def _next_generator(self) -> torch.Generator:
        epoch = self.epoch_of() if self.epoch_of is not None else self.epoch
        self.epoch = epoch + 1
        return torch.Generator().manual_seed(epoch_seed(self.seed, epoch, self.batch_order))


class TensorBatches(_EpochBatches):
    """An iterable of ``(images, labels)`` batches sliced from tensors already on the device.

    Shuffling draws a fresh permutation each epoch from a generator seeded by :func:`epoch_seed` ``(seed, epoch)``,
    so runs are reproducible without worker processes. ``batch_order`` defaults to ``consecutive`` here: the
    attacker's own fits (decoders, attack classifiers) pass seeds already derived per role by a hash, so their
    ``seed + epoch`` never meets another fit's; the data module passes its ``data.batch_order``.
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        batch_order: str = "consecutive",
        epoch_of: Callable[[], int] | None = None,
    ):
        super().__init__(seed, batch_order, epoch_of)
        self.images, self.labels = images, labels
        self.batch_size, self.shuffle = batch_size, shuffle

    def __len__(self) -> int:
        return -(-len(self.labels) // self.batch_size)

    def __iter__(self):
        n = len(self.labels)
        if self.shuffle:
            order = torch.randperm(n, generator=self._next_generator()).to(self.images.device)
        else:
            order = None
        for start in range(0, n, self.batch_size):
            if order is None:
                yield self.images[start : start + self.batch_size], self.labels[start : start + self.batch_size]
            else:
                index = order[start : start + self.batch_size]
                yield self.images[index], self.labels[index]


class PoissonBatches(_EpochBatches):
    """``steps`` batches of ``(images, labels)`` by Poisson sampling, as DP-SGD's accountant assumes: each image joins
    each batch independently with probability ``sample_rate``, so batch sizes vary (and may be zero).

    As Opacus's ``DPDataLoader``. Each pass over the ``steps`` batches draws from a generator seeded by
    :func:`epoch_seed` ``(seed, epoch)``: a resumed fit (``epoch_of``) draws the masks the uninterrupted one draws,
    which is what the restored accountant counts on.
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        sample_rate: float,
        steps: int,
        seed: int = 0,
        batch_order: str = "hashed",
        epoch_of: Callable[[], int] | None = None,
    ):
        super().__init__(seed, batch_order, epoch_of)
        self.images, self.labels = images, labels
        self.sample_rate, self.steps = sample_rate, steps

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        generator = self._next_generator()
        for _ in range(self.steps):
            index = (torch.rand(len(self.labels), generator=generator) < self.sample_rate).nonzero().squeeze(1)
            index = index.to(self.images.device)
            yield self.images[index], self.labels[index]
