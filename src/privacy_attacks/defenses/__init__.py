"""Defences, grouped by the threat surface they act on (``defense=<name>``, ``conf/defense/``).

- ``api``: post-processing of the black-box API's answers (:mod:`.api`), against every attack that queries it;
- ``client``: post-processing of a federated client's shared gradient (:mod:`.client`), against gradient inversion.
"""

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from privacy_attacks.errors import ConfigError, UserError

from .api import GaussianNoise, LabelOnly, NoDefense, OutputDefense, ReverseSigmoid, Rounding, TopK
from .client import GradientClipNoise, GradientDefense, GradientPrune, GradientQuantize


def defense_from_config(cfg: DictConfig) -> OutputDefense | GradientDefense | None:
    """The defence of ``cfg.defense`` (``conf/defense/``), or None for ``defense=none``; :class:`ConfigError` when it
    acts on a surface the attack does not meet (the attack config's ``attack.surfaces``)."""
    node = cfg.get("defense")
    try:
        defense = instantiate(node) if node is not None else None
    except InstantiationException as error:  # a bad strength: show the defence's own message
        if isinstance(error.__cause__, UserError):
            raise error.__cause__ from None
        raise
    surface = getattr(defense, "surface", None)
    if surface is None:
        return None
    surfaces = list(OmegaConf.select(cfg, "attack.surfaces", default=None) or [])
    if surface not in surfaces:
        met = ", ".join(surfaces) or "none"
        raise ConfigError(
            f"defense={type(defense).__name__} acts on the {surface} surface, which attack={cfg.attack.name} does not "
            f"meet (it meets: {met}); choose another defence or defense=none."
        )
    return defense


__all__ = [
    "defense_from_config",
    "GaussianNoise",
    "GradientClipNoise",
    "GradientDefense",
    "GradientPrune",
    "GradientQuantize",
    "LabelOnly",
    "NoDefense",
    "OutputDefense",
    "ReverseSigmoid",
    "Rounding",
    "TopK",
]
