"""Gradient inversion (``attack=gradient_inversion``): recover a federated client's batch from its gradient.

The entry is :mod:`.attack`; :mod:`.client` simulates the client, :mod:`.labels` recovers labels,
:mod:`.matching` holds the objective and :mod:`.assignment` pairs reconstructions with originals.
"""

from .attack import run, validate

__all__ = ["run", "validate"]
