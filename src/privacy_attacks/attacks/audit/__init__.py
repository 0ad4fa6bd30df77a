"""Empirical privacy audits of a training recipe: ``python attack.py attack=audit`` (the one-run canary audit of
Steinke, Nasr & Jagielski 2023). The membership attacks' own audit bound is ``audit/epsilon_lb`` of
``attack=membership`` (:mod:`privacy_attacks.attacks.membership.audit`).
"""

from .attack import run, validate

__all__ = ["run", "validate"]
