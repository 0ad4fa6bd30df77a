"""Hydra launchers of privacy_attacks: ``hydra/launcher=vectorised`` (:mod:`.vectorised_launcher`)."""
