"""Train a classifier (by default the target LeNet5): ``python train.py [overrides]``."""

from pathlib import Path

import hydra
from omegaconf import DictConfig

from privacy_attacks.cli import config_hints, run_reporting_errors
from privacy_attacks.pipelines import run_train


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float:
    return run_reporting_errors(run_train, cfg)["test/acc"]


if __name__ == "__main__":
    with config_hints(Path(__file__).parent / "conf", "train"):
        main()
