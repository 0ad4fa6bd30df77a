"""Reconstruction attacks on one engine: output-based inversion here, feature- and gradient-based on top.

See :mod:`.engine` for the engine's contract and a usage example.
"""

from privacy_attacks.attacks.reconstruction.engine import (
    ReconstructionModule,
    fit_reconstruction,
    validate_engine_settings,
)
from privacy_attacks.attacks.reconstruction.priors import (
    GaussianBlur,
    Jitter,
    PixelEnergy,
    Prior,
    TotalVariation,
    total_variation,
)

__all__ = [
    "GaussianBlur",
    "Jitter",
    "PixelEnergy",
    "Prior",
    "ReconstructionModule",
    "TotalVariation",
    "fit_reconstruction",
    "total_variation",
    "validate_engine_settings",
]
