"""Shared fixtures: composing the real configs, small targets, real MNIST, subprocess runs.

Tests never download: tests marked ``mnist`` need ``MNIST_ROOT`` to point at a local copy
(CI sets it to ``../shared/data``) and are skipped otherwise, unless ``PRIVACY_ATTACKS_REQUIRE_MNIST=1``
(CI sets it), which makes a missing copy stop the whole run with an error. Tests marked ``fashion_mnist`` need the
Debian package ``dataset-fashion-mnist`` (or ``FASHION_MNIST_ROOT``), which CI installs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from lightning.pytorch.loggers.logger import Logger
from omegaconf import DictConfig, OmegaConf, open_dict

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"

# A target that trains in seconds on CPU: LeNet5, 2 epochs on 5,000 images.
SMALL_TARGET = ["target.max_epochs=2", "target.members=5000"]
# An evaluator that trains in seconds on CPU.
SMALL_EVALUATOR = ["evaluator.max_epochs=1", "evaluator.members=5000", "judge.max_epochs=1", "judge.members=5000"]
# Output inversion in seconds: synthetic 1x28x28 images of 10 classes (300 training, 60 test), a LeNet5 target and
# two judges on disjoint halves of a tiny pool.
TINY_INVERSION = [
    "data=synthetic",
    "data.source.train_size=300",
    "data.source.test_size=60",
    "data.val_size=60",
    "target.members=200",
    "target.max_epochs=1",
    "evaluator.members=100",
    "judge.members=100",
    "judge.member_offset=100",
    "attack=inversion",
]


def config_losses(temperature: float = 1.0) -> dict:
    """Every distillation loss of ``conf/attack/_losses.yaml`` (the one registry of losses), instantiated at
    ``temperature``: ``{name: loss}``."""
    node = OmegaConf.merge(OmegaConf.load(CONF_DIR / "attack" / "_losses.yaml"), {"temperature": temperature})
    return {name: instantiate(loss) for name, loss in node.losses.items()}


LOSS_NAMES = sorted(OmegaConf.load(CONF_DIR / "attack" / "_losses.yaml").losses)


def attack_config(attack: str, overrides: list[str] = ()) -> DictConfig:
    """``conf/attack.yaml`` with ``attack=<attack>``, unresolved: for reading what a config lists
    (its priors, inits, losses or methods) when tests are collected."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="attack", overrides=[f"attack={attack}", *overrides])


def mnist_root() -> str | None:
    root = os.environ.get("MNIST_ROOT")
    return root if root and (Path(root) / "MNIST" / "raw").is_dir() else None


def fashion_mnist_root() -> str | None:
    """Where ``conf/data/fashion_mnist.yaml`` finds Fashion-MNIST (``FASHION_MNIST_ROOT`` or the Debian package's
    folder), if its four files are there."""
    from privacy_attacks.data import FashionMNISTSource

    root = os.environ.get("FASHION_MNIST_ROOT", "/usr/share/datasets/fashion-mnist")
    return root if FashionMNISTSource(root).available() else None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``mnist`` skip without MNIST (an error with PRIVACY_ATTACKS_REQUIRE_MNIST=1), tests marked
    ``fashion_mnist`` without Fashion-MNIST (CI installs the package ``dataset-fashion-mnist``, so they run there; an
    error with PRIVACY_ATTACKS_REQUIRE_FASHION_MNIST=1)."""
    if not mnist_root():
        if os.environ.get("PRIVACY_ATTACKS_REQUIRE_MNIST") == "1":
            raise pytest.UsageError(
                f"PRIVACY_ATTACKS_REQUIRE_MNIST=1 but MNIST_ROOT={os.environ.get('MNIST_ROOT')!r} holds no MNIST/raw/: "
                "the mnist tests would be skipped."
            )
        skip = pytest.mark.skip(reason="needs MNIST: set MNIST_ROOT to a folder holding MNIST/raw/")
        for item in items:
            if "mnist" in item.keywords:
                item.add_marker(skip)
    if not fashion_mnist_root() and any("fashion_mnist" in item.keywords for item in items):
        if os.environ.get("PRIVACY_ATTACKS_REQUIRE_FASHION_MNIST") == "1":
            raise pytest.UsageError(
                "PRIVACY_ATTACKS_REQUIRE_FASHION_MNIST=1 but Fashion-MNIST is not installed: the fashion_mnist "
                "tests would be skipped (apt-get install dataset-fashion-mnist, or set FASHION_MNIST_ROOT)."
            )
        skip = pytest.mark.skip(reason="needs Fashion-MNIST: apt-get install dataset-fashion-mnist")
        for item in items:
            if "fashion_mnist" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One target cache for the whole test session, so small targets train once."""
    return tmp_path_factory.mktemp("target_cache")


def compose_config(name: str, overrides: list[str], output_dir: Path, cache: Path) -> DictConfig:
    """Compose ``conf/<name>.yaml`` with ``overrides``, shrunk for tests: CPU, no logger, no progress bar."""
    base = [
        "logger=none",
        f"paths.output_dir={output_dir}",
        f"paths.cache_dir={cache}",
        "+trainer.enable_progress_bar=false",
    ]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name=name, overrides=base + overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        if cfg.get("data") is not None and cfg.data.get("source") is None:  # MNIST's config (however it was chosen)
            given = {o.split("=", 1)[0].lstrip("+") for o in overrides}
            if mnist_root() and "data.root" not in given:
                cfg.data.root = mnist_root()
            if "data.download" not in given:
                cfg.data.download = False
    return cfg


@pytest.fixture
def compose_train(tmp_path: Path, cache_dir: Path):
    """``compose_train(overrides) -> cfg`` for ``conf/train.yaml``, without callbacks."""
    return lambda overrides=(): compose_config("train", ["callbacks=none", *overrides], tmp_path, cache_dir)


@pytest.fixture
def unkeyed_threads():
    """torch at the CPU thread count the pinned cache keys were made with (:data:`privacy_attacks.cache.
    UNKEYED_CPU_THREADS`), restored afterwards: a key's name must not depend on the machine's core count."""
    import torch

    from privacy_attacks.cache import UNKEYED_CPU_THREADS

    before = torch.get_num_threads()
    torch.set_num_threads(UNKEYED_CPU_THREADS)
    yield UNKEYED_CPU_THREADS
    torch.set_num_threads(before)


@pytest.fixture
def compose_attack(tmp_path: Path, cache_dir: Path):
    """``compose_attack(overrides) -> cfg`` for ``conf/attack.yaml`` with a small target and evaluator."""
    return lambda overrides=(): compose_config(
        "attack", [*SMALL_TARGET, *SMALL_EVALUATOR, *overrides], tmp_path, cache_dir
    )


def run_script(
    script: str, args: list[str], cwd: Path, cache: Path, timeout: float = 600
) -> subprocess.CompletedProcess:
    """Run ``python <ROOT>/<script> <args>`` in ``cwd`` as a user would; returns the completed process."""
    env = {**os.environ, "PRIVACY_ATTACKS_CACHE": str(cache), "HYDRA_FULL_ERROR": "0"}
    if mnist_root():
        env["MNIST_ROOT"] = mnist_root()
    return subprocess.run(
        [sys.executable, str(ROOT / script), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


class RecordingLogger(Logger):
    """A Lightning logger that keeps what it is given: ``logged`` is ``[(step, {name: value})]``."""

    name, version = "recording", 0

    def __init__(self):
        super().__init__()
        self.logged = []

    def log_metrics(self, metrics, step=None):
        self.logged.append((step, dict(metrics)))

    def log_hyperparams(self, params, *args, **kwargs):
        pass


def run_as_group(configs: dict[int, DictConfig], monkeypatch: pytest.MonkeyPatch) -> dict[int, dict[str, float]]:
    """Run attack ``configs`` in order, in this process, as the jobs (numbered by their keys) of one group planned by
    ``hydra/launcher=vectorised``; their metrics by job."""
    from privacy_attacks.engine import sweep
    from privacy_attacks.pipelines import run_attack

    sweep.plan_groups([configs])
    try:
        results = {}
        for number, cfg in configs.items():
            monkeypatch.setattr(sweep, "this_job", lambda number=number: number)
            results[number] = run_attack(cfg)
        return results
    finally:
        sweep.clear_plan()
