"""Feature inversion (``attack=feature_inversion``): recover private queries from one layer's features.

The entry is :mod:`.attack`; :mod:`.matching` holds the objective and :mod:`.inversion_network` the
attacker's learned decoder, :mod:`.unrolled` the learned refinement stages after it.
"""

from .attack import run, validate

__all__ = ["run", "validate"]
