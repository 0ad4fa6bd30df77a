"""The OmegaConf resolvers the configs use, registered when the package is imported."""

from __future__ import annotations

import functools
from typing import Any

from omegaconf import OmegaConf

from privacy_attacks.errors import ConfigError


def pool_share(fraction: Any, *, _root_: Any) -> int:
    """``${pool_share:0.5}``: that fraction (rounded down) of the configured dataset's training pool, its training
    images outside the validation split (``data.val_size``): 27,500 of MNIST's 55,000, 22,500 of CIFAR-10's 45,000.
    The judges of output inversion take their halves of the pool so, on any dataset."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction <= 1:
        raise ConfigError(f"pool_share:{fraction!r} is not allowed: it must be a fraction in [0, 1].")
    data = _root_.data
    return int(fraction * (_training_set_size(OmegaConf.to_yaml(data, resolve=True)) - int(data.val_size)))


@functools.lru_cache(maxsize=8)
def _training_set_size(data_yaml: str) -> int:
    """The training set's size of the data config written ``data_yaml``, once per config (a source that knows it only
    by reading its images reads them once)."""
    from privacy_attacks.data.identity import training_set_size  # (torch: imported when a config asks)

    return training_set_size(OmegaConf.create(data_yaml))


OmegaConf.register_new_resolver("pool_share", pool_share, replace=True)
