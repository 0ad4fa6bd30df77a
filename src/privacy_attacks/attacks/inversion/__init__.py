"""Output-based model inversion of every class (``attack=inversion``): the entry is :mod:`.attack`."""

from .attack import run, validate

__all__ = ["run", "validate"]
