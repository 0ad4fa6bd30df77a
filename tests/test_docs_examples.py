"""The code the docs give researchers to copy runs as written (docs/extending.md's new attack)."""

from __future__ import annotations

import re
import types
from pathlib import Path

import pytest
import yaml
from omegaconf import open_dict

from privacy_attacks.errors import ConfigError
from privacy_attacks.targets import provision_target

DOCS = Path(__file__).resolve().parents[1] / "docs"


def fenced_blocks(page: str, language: str) -> list[str]:
    """The ``language`` code blocks of ``docs/<page>``, in order."""
    return re.findall(rf"```{language}\n(.*?)```", (DOCS / page).read_text(), flags=re.DOTALL)


def test_the_new_attack_of_the_extending_guide_runs_on_any_data(compose_attack):
    module = types.ModuleType("confidence_gap")
    exec(compile(fenced_blocks("extending.md", "python")[0], "extending.md", "exec"), module.__dict__)  # noqa: S102
    node = yaml.safe_load(next(b for b in fenced_blocks("extending.md", "yaml") if "confidence_gap" in b))
    assert node["attack"]["entry"].endswith("confidence_gap.attack.run")
    tiny = ["data=synthetic", "data.source.train_size=300", "data.source.test_size=60", "data.val_size=60"]
    cfg = compose_attack([*tiny, "target.members=200", "target.max_epochs=1"])
    with open_dict(cfg):
        cfg.num_images = node["num_images"] // 10
    module.validate(cfg)
    metrics = module.run(cfg, provision_target(cfg))
    assert -1 <= metrics["gap/confidence"] <= 1 and metrics["queries/used"] == 2 * cfg.num_images
    cfg.num_images = 0
    with pytest.raises(ConfigError, match="num_images=0"):
        module.validate(cfg)
