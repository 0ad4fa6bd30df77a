"""What the docs give researchers to copy runs as written: every ``python train.py`` and ``python attack.py`` command
of README.md and docs/ composes and passes its checks before any work, and docs/extending.md's new attack runs."""

from __future__ import annotations

import re
import shlex
import types
from pathlib import Path

import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict

from privacy_attacks.defenses import recipe_with_defense
from privacy_attacks.errors import ConfigError, DataUnavailableError
from privacy_attacks.pipelines import check_attack, check_train
from privacy_attacks.targets import provision_target
from privacy_attacks.training import validate_recipe
from tests.conftest import CONF_DIR, compose_config

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


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


def top_level_values(value: str) -> list[str]:
    """A sweep's values, ``a,b,[1,2]`` -> ``["a", "b", "[1,2]"]`` (commas inside brackets belong to a list)."""
    values, part, depth = [], "", 0
    for char in value:
        depth += (char in "[{(") - (char in "]})")
        if char == "," and depth == 0:
            values.append(part)
            part = ""
        else:
            part += char
    return [*values, part]


def documented_commands() -> list[tuple[str, str, list[str]]]:
    """(where, script, overrides) of every command in the bash blocks of README.md and docs/*.md: each swept key at
    its first value, Hydra's own settings left out; commands with placeholders (``<name>``, ``/path/to/``) are not
    runnable as written and are left out, and so are those that name a researcher's own package (``mypackage.``) or
    config folder (``--config-dir``), which the tests of their examples run."""
    found = []
    for page in [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]:
        for block in re.findall(r"```bash\n(.*?)```", page.read_text(), flags=re.DOTALL):
            for line in block.replace("\\\n", " ").splitlines():
                match = re.match(r"(?:[A-Z_]+=\S+ )*python (train|attack)\.py(.*)", line.strip())
                own = ("<", "/path/to/", "mypackage.", "--config-dir")  # placeholders, a researcher's own code
                if match is None or any(mark in match.group(2) for mark in own):
                    continue
                overrides = []
                for token in shlex.split(match.group(2), comments=True):
                    if token in ("-m", "--multirun") or token.startswith(("hydra.", "hydra/")):
                        continue
                    key, sep, value = token.partition("=")
                    overrides.append(f"{key}={top_level_values(value)[0]}" if sep else token)
                found.append((f"{page.name}:{len(found)}:{' '.join(overrides)[:80]}", match[1], overrides))
    return found


COMMANDS = documented_commands()


def with_experiment_sweep(script: str, overrides: list[str]) -> list[str]:
    """``overrides`` and the first value of every key an ``experiment=`` sweeps (its ``hydra.sweeper.params``) that
    the command does not set itself: the experiment's first job."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        hydra_cfg = compose(config_name=script, overrides=overrides, return_hydra_config=True)
    params = hydra_cfg.hydra.sweeper.get("params")
    params = OmegaConf.to_container(params) if params else {}
    given = {o.split("=", 1)[0].lstrip("+") for o in overrides}
    return [*overrides, *(f"{k}={top_level_values(str(v))[0]}" for k, v in params.items() if k not in given)]


@pytest.mark.mnist
@pytest.mark.parametrize(("where", "script", "overrides"), COMMANDS, ids=[where for where, _, _ in COMMANDS])
def test_every_documented_command_passes_its_checks(where, script, overrides, tmp_path, cache_dir):
    """The checks every run makes before any work (:func:`check_attack`, :func:`check_train` and the recipe against its
    data), on the command's first job; data this machine cannot read (CIFAR without internet) is all a command may
    lack."""
    cfg = compose_config(script, with_experiment_sweep(script, overrides), tmp_path, cache_dir)
    if cfg.trainer.accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        with open_dict(cfg):
            cfg.trainer.accelerator = "cpu"  # the checks of a GPU command, on this machine's CPU
    try:
        if script == "train":
            check_train(cfg)
            validate_recipe(recipe_with_defense(cfg, "model"), data=cfg.data)  # train.py checks the data at its fit
        else:
            check_attack(cfg)
    except DataUnavailableError:
        pytest.skip("the command's data cannot be read here")


def test_the_commands_are_found():
    assert len(COMMANDS) > 150 and {script for _, script, _ in COMMANDS} == {"train", "attack"}


def test_the_membership_method_of_the_extending_guide_runs_and_decides_on_the_attackers_images(
    compose_attack, monkeypatch
):
    import sys

    from privacy_attacks.pipelines import run_attack

    source = next(b for b in fenced_blocks("extending.md", "python") if "class MarginAttack" in b)
    module = types.ModuleType("privacy_attacks.attacks.membership.gap")
    module.__package__ = "privacy_attacks.attacks.membership"
    exec(compile(source, "extending.md", "exec"), module.__dict__)  # noqa: S102
    monkeypatch.setitem(sys.modules, module.__name__, module)
    node = yaml.safe_load(next(b for b in fenced_blocks("extending.md", "yaml") if "MarginAttack" in b))
    tiny = ["data=synthetic", "data.source.train_size=800", "data.source.test_size=60", "data.val_size=60"]
    target = ["target.members=200", "target.max_epochs=1", "eval_members=50", "shadow_train_size=100"]
    cfg = compose_attack(
        ["attack=membership", *tiny, *target, f"+methods.margin._target_={node['margin']['_target_']}"]
    )
    with open_dict(cfg):
        cfg.method = "margin"
    metrics = run_attack(cfg)
    assert 0 <= metrics["mia/auc"] <= 1 and metrics["queries/used"] > metrics["mia/members"] + metrics["mia/nonmembers"]


def test_the_query_strategy_of_the_extending_guide_buys_the_rounds_from_its_node_alone(compose_attack, monkeypatch):
    from privacy_attacks.attacks.stealing import attack as stealing_attack
    from privacy_attacks.attacks.stealing import query_strategies
    from privacy_attacks.pipelines import run_attack

    source = next(b for b in fenced_blocks("extending.md", "python") if "class Entropy" in b)
    namespace = dict(vars(query_strategies))  # the class goes into query_strategies.py, as the guide says
    exec(compile(source, "extending.md", "exec"), namespace)  # noqa: S102
    monkeypatch.setattr(query_strategies, "Entropy", namespace["Entropy"], raising=False)
    chosen = []
    select = namespace["Entropy"].select
    monkeypatch.setattr(
        namespace["Entropy"], "select", lambda self, *args: chosen.append(select(self, *args)) or chosen[-1]
    )
    node = yaml.safe_load(next(b for b in fenced_blocks("extending.md", "yaml") if "Entropy" in b))
    tiny = ["data=synthetic", "data.source.train_size=400", "data.source.test_size=60", "data.val_size=60"]
    stealing = ["attack=distillation", "target.members=200", "target.max_epochs=1", "schedule.steps=5"]
    rounds = ["query_budget=30", "active.rounds=3", "active.candidates=100", "query_strategy=entropy"]
    cfg = compose_attack(
        [*tiny, *stealing, *rounds, f"+query_strategies.entropy._target_={node['entropy']['_target_']}"]
    )
    stealing_attack.validate(cfg)
    metrics = run_attack(cfg)
    assert metrics["queries/used"] == 30 and [len(c) for c in chosen] == [10, 10]  # rounds 2 and 3 chose by entropy


def test_the_score_of_the_extending_guide_runs_from_a_module_of_ones_own_by_the_guides_command(
    compose_attack, monkeypatch
):
    import sys

    from privacy_attacks.pipelines import run_attack

    source = next(b for b in fenced_blocks("extending.md", "python") if "def top_two_gap" in b)
    package, module = types.ModuleType("mypackage"), types.ModuleType("mypackage.scores")
    exec(compile(source, "extending.md", "exec"), module.__dict__)  # noqa: S102
    calls = []
    score = module.top_two_gap
    module.top_two_gap = lambda log_probs, labels: calls.append(len(labels)) or score(log_probs, labels)
    package.scores = module
    monkeypatch.setitem(sys.modules, "mypackage", package)
    monkeypatch.setitem(sys.modules, "mypackage.scores", module)
    block = next(b for b in fenced_blocks("extending.md", "bash") if "top_two_gap" in b)
    overrides = shlex.split(block.replace("\\\n", " ").split("python attack.py", 1)[1])
    tiny = ["data=synthetic", "data.source.train_size=800", "data.source.test_size=60", "data.val_size=60"]
    target = ["target.members=200", "target.max_epochs=1", "eval_members=50", "methods.loss.reference_size=40"]
    cfg = compose_attack([*overrides, *tiny, *target])
    metrics = run_attack(cfg)
    assert calls == [100, 40]  # the evaluation images (50 + 50), then the threshold's 40 reference images
    assert 0 <= metrics["mia/auc"] <= 1
    probabilities = torch.tensor([[0.7, 0.2, 0.1], [0.4, 0.35, 0.25]])
    gaps = score(probabilities.log(), torch.tensor([0, 1]))
    torch.testing.assert_close(gaps, torch.tensor([0.5, 0.05]))


def test_a_network_and_its_config_outside_the_repository_train_and_are_attacked_by_the_guides_route(
    compose_train, compose_attack, tmp_path, monkeypatch
):
    """docs/own_data_and_model.md: a class in a module of one's own and its net config in a folder of one's own
    (``--config-dir``, which Hydra adds to its search path as ``hydra.searchpath`` does)."""
    import sys

    from privacy_attacks.pipelines import check_attack, run_train

    node = next(b for b in fenced_blocks("own_data_and_model.md", "yaml") if "mynets.Wide" in b)
    (tmp_path / "myconf" / "net").mkdir(parents=True)
    (tmp_path / "myconf" / "net" / "wide.yaml").write_text(node)
    module = types.ModuleType("mynets")

    class Wide(torch.nn.Module):
        def __init__(self, image_shape, num_classes, width=64):
            super().__init__()
            self.width = width
            self.layers = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(num_classes))

        def forward(self, images):
            return self.layers(images)

    module.Wide = Wide
    monkeypatch.setitem(sys.modules, "mynets", module)
    search = f"hydra.searchpath=[file://{tmp_path / 'myconf'}]"
    tiny = ["data=synthetic", "data.source.train_size=200", "data.val_size=50"]
    cfg = compose_train([search, "net@model.net=wide", *tiny, "model.max_epochs=1", "model.members=100"])
    assert cfg.model.net._target_ == "mynets.Wide" and cfg.model.net.width == 64
    assert 0 <= run_train(cfg)["test/acc"] <= 1
    stealing = ["attack=distillation", "net@target.net=wide", "target.members=100", "query_budget=100"]
    attack = compose_attack([search, *stealing, *tiny])
    assert attack.target.net == cfg.model.net  # the target the guide's train.py command trained
    check_attack(attack)
