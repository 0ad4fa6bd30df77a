"""The reconstruction engine: optimise images (not weights) against a pluggable objective.

Output, feature and gradient inversion (:mod:`privacy_attacks.attacks`) all run on it. See :mod:`.module`
for the engine's contract and a usage example; :mod:`.priors` and :mod:`.inits` hold the pieces a config
names, :mod:`.metrics` the image scores and :mod:`.figures` the figures every reconstruction attack draws.
"""

from privacy_attacks.engine.module import (
    ReconstructionModule,
    engine_from_config,
    engine_hparams,
    fit_reconstruction,
    validate_engine_config,
    validate_engine_settings,
)
from privacy_attacks.engine.priors import (
    CoarseToFine,
    GaussianBlur,
    Jitter,
    PixelEnergy,
    Prior,
    TotalVariation,
    total_variation,
)

__all__ = [
    "CoarseToFine",
    "GaussianBlur",
    "Jitter",
    "PixelEnergy",
    "Prior",
    "ReconstructionModule",
    "TotalVariation",
    "engine_from_config",
    "engine_hparams",
    "fit_reconstruction",
    "total_variation",
    "validate_engine_config",
    "validate_engine_settings",
]
