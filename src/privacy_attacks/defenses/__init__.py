"""Defences, grouped by the threat surface they act on (``defense=<name>``, ``conf/defense/``).

- ``api``: post-processing of the black-box API's answers (:mod:`.api`), against every attack that queries it;
- ``client``: post-processing of a federated client's shared gradient (:mod:`.client`), against gradient inversion;
- ``training``: how the target is trained (:mod:`.training`, DP-SGD), against every attack on a trained target; it
  enters the classifier's recipe (:func:`recipe_with_defense`), so ``train.py`` meets it too.
"""

from omegaconf import DictConfig, OmegaConf

from privacy_attacks.errors import ConfigError
from privacy_attacks.harness import instantiate_checked

from .api import GaussianNoise, LabelOnly, NoDefense, OutputDefense, ReverseSigmoid, Rounding, TopK, api_utility
from .client import GradientClipNoise, GradientDefense, GradientPrune, GradientQuantize
from .training import DPSGD, PrivateTraining, TrainingDefense

# What train.py meets: it trains, so only a training defence applies.
TRAIN_SURFACES = ("training",)


def defense_from_config(
    cfg: DictConfig, surface: str | None = None
) -> OutputDefense | GradientDefense | TrainingDefense | None:
    """The defence of ``cfg.defense`` (``conf/defense/``), or None for ``defense=none``; :class:`ConfigError` when it
    acts on a surface the run does not meet (an attack config's ``attack.surfaces``; ``training`` for train.py).
    With ``surface`` (``api``, ``client``), None too when the defence acts elsewhere (a training defence is already
    in the target, not in its API)."""
    node = cfg.get("defense")
    defense = instantiate_checked(node) if node is not None else None  # a bad strength: the defence's own message
    acts_on = getattr(defense, "surface", None)
    if acts_on is None:
        return None
    num_classes = OmegaConf.select(cfg, "data.num_classes", default=None)
    if num_classes is not None and hasattr(defense, "check_classes"):
        defense.check_classes(int(num_classes), OmegaConf.select(cfg, "data.name", default="the data"))
    if cfg.get("attack") is not None:
        surfaces, run = list(OmegaConf.select(cfg, "attack.surfaces", default=None) or []), f"attack={cfg.attack.name}"
    else:
        surfaces, run = list(TRAIN_SURFACES), "train.py"
    if acts_on not in surfaces:
        met = ", ".join(surfaces) or "none"
        raise ConfigError(
            f"defense={type(defense).__name__} acts on the {acts_on} surface, which {run} does not "
            f"meet (it meets: {met}); choose another defence or defense=none."
        )
    return defense if surface is None or acts_on == surface else None


def recipe_with_defense(cfg: DictConfig, key: str) -> DictConfig:
    """The classifier recipe ``cfg[key]`` as it is trained under ``cfg.defense``: with a training defence
    (``defense=dpsgd``) a copy whose ``privacy`` is the defence's node, so the defence is part of the checkpoint key;
    otherwise ``cfg[key]`` itself. :class:`ConfigError` as :func:`defense_from_config`."""
    recipe = cfg[key]
    if not isinstance(defense_from_config(cfg), TrainingDefense):
        return recipe
    trained = OmegaConf.create(OmegaConf.to_container(recipe, resolve=True))
    trained.privacy = OmegaConf.to_container(cfg.defense, resolve=True)
    return trained


__all__ = [
    "api_utility",
    "defense_from_config",
    "recipe_with_defense",
    "DPSGD",
    "GaussianNoise",
    "GradientClipNoise",
    "GradientDefense",
    "GradientPrune",
    "GradientQuantize",
    "LabelOnly",
    "NoDefense",
    "OutputDefense",
    "PrivateTraining",
    "ReverseSigmoid",
    "Rounding",
    "TopK",
    "TrainingDefense",
]
