"""Run an attack against the cached target: ``python attack.py attack=<name> [overrides]``."""

from pathlib import Path

import hydra
from omegaconf import DictConfig

from privacy_attacks.cli import config_hints, run_reporting_errors
from privacy_attacks.pipelines import run_attack


@hydra.main(version_base="1.3", config_path="conf", config_name="attack")
def main(cfg: DictConfig) -> dict:
    return run_reporting_errors(run_attack, cfg)


if __name__ == "__main__":
    with config_hints(Path(__file__).parent / "conf", "attack"):
        main()
