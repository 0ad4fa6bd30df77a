"""Empirical privacy audits of a training recipe: ``python attack.py attack=audit`` (the one-run canary audit of
Steinke, Nasr & Jagielski 2023): a lower bound that holds from one run, because each canary joins by an independent
coin. ``attack=membership`` reports only a heuristic estimate, ``mia/epsilon_heuristic``
(:mod:`privacy_attacks.attacks.membership.audit`).
"""

from .attack import run, validate

__all__ = ["run", "validate"]
