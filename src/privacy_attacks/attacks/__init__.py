"""The attacks: one subpackage per attack, each with its entry ``attack.py`` (``run(cfg, target)``, ``validate(cfg)``).

inversion, feature_inversion and gradient_inversion run on :mod:`privacy_attacks.engine`; stealing and
membership query the target through :mod:`privacy_attacks.blackbox`.
"""
