"""train.py beyond MNIST and LeNet5: every data config and model recipe composed from the real configs, tiny fits on
synthetic images and Fashion-MNIST, cache keys that name the dataset (MNIST's unchanged), one-line refusals before
training, and the attacks that still read MNIST themselves held to it."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

import privacy_attacks.pipelines as pipelines
import privacy_attacks.training as training
from privacy_attacks import cache
from privacy_attacks.defenses import recipe_with_defense
from privacy_attacks.errors import ConfigError, DataUnavailableError
from privacy_attacks.pipelines import run_attack, run_train
from privacy_attacks.targets import checkpoint_path, checkpoint_spec
from privacy_attacks.training import fit_classifier, validate_recipe
from tests.conftest import CONF_DIR, run_script
from tests.idx import write_fake_fashion, write_fake_mnist

DATA_CONFIGS = sorted(p.stem for p in (CONF_DIR / "data").glob("*.yaml"))
MODEL_RECIPES = sorted(p.stem for p in (CONF_DIR / "model").glob("[!_]*.yaml"))
# Keys every data config declares: what the models read, and every sweepable key of the split.
DATA_KEYS = {"name", "image_shape", "num_classes", "mean", "std", "val_size", "split_seed", "eval_batch_size"}
TINY_SYNTHETIC = ["data=synthetic", "data.source.train_size=300", "data.source.test_size=60", "data.val_size=60"]


@pytest.fixture
def no_training(monkeypatch):
    """Fails a test that reaches the data module: what it checks must stop before any data is read."""

    def refuse(*args, **kwargs):
        raise AssertionError("the data module was built: the check came too late")

    monkeypatch.setattr(training, "build_datamodule", refuse)


@pytest.mark.parametrize("name", DATA_CONFIGS)
def test_every_data_config_declares_what_models_and_sweeps_read(compose_train, name):
    data = compose_train([f"data={name}"]).data
    assert DATA_KEYS | {"batch_order", "_target_"} <= set(data) and data.name == name
    if name == "image_folder":  # its folders and class count are the user's to give
        assert OmegaConf.is_missing(data, "num_classes") and OmegaConf.is_missing(data.source, "train_dir")
        return
    shape = list(data.image_shape)
    assert len(shape) == 3 and len(data.mean) in (1, shape[0]) and len(data.std) in (1, shape[0])
    if data.get("source") is not None:
        source = instantiate(data.source)
        assert 0 < data.val_size < source.train_size  # val_size makes sense for each dataset


def test_mnist_config_keeps_its_keys_and_values():
    data = OmegaConf.load(CONF_DIR / "data" / "mnist.yaml")
    assert data._target_ == "privacy_attacks.data.MNISTDataModule"
    assert (data.download, data.val_size, data.split_seed, data.eval_batch_size) == (True, 5000, 0, 2000)
    assert data.batch_order == "hashed" and OmegaConf.to_container(data)["root"] == "${oc.env:MNIST_ROOT,data}"


@pytest.mark.mnist
def test_mnist_targets_keep_their_keys(compose_train, tmp_path):
    """The default recipe's key before models read the data's classes (``target-43726b864065.pt`` for 2,000 members and
    one epoch), and no data entry for MNIST's own files."""
    cfg = compose_train(["model.members=2000", "model.max_epochs=1"])
    assert cfg.model.net.num_classes == 10
    assert "data" not in checkpoint_spec(cfg.model, cfg.data)
    assert checkpoint_path(cfg.model, cfg.data, tmp_path).name == "target-43726b864065.pt"


def test_mnists_recipes_resolve_to_the_ten_classes_they_were_cached_with(compose_train):
    """MNIST's networks read ``${data.num_classes}`` now; on MNIST it resolves to the 10 their keys were made with."""
    for model in MODEL_RECIPES:
        net = OmegaConf.to_container(compose_train([f"model={model}"]).model.net, resolve=True)
        assert type(net["num_classes"]) is int and net["num_classes"] == 10


def test_mnist_fashion_mnist_and_synthetic_targets_get_different_keys(compose_train, tmp_path):
    mnist_root = write_fake_mnist(tmp_path / "mnist", n_train=30, n_test=10)
    fashion_root = write_fake_fashion(tmp_path / "fashion")
    configs = {
        "mnist": compose_train([f"data.root={mnist_root}"]),
        "fashion_mnist": compose_train(["data=fashion_mnist", f"data.source.root={fashion_root}"]),
        "synthetic": compose_train(["data=synthetic"]),
    }
    specs = {name: checkpoint_spec(cfg.model, cfg.data) for name, cfg in configs.items()}
    assert set(specs["mnist"]["data"]) == {"digest"}  # other files in MNIST's place: as before, the digest only
    assert (
        specs["fashion_mnist"]["data"]["name"] == "fashion_mnist" and specs["synthetic"]["data"]["name"] == "synthetic"
    )
    names = {checkpoint_path(cfg.model, cfg.data, tmp_path).name for cfg in configs.values()}
    assert len(names) == 3
    other_seed = compose_train(["data=synthetic", "data.source.seed=1"])
    assert checkpoint_path(other_seed.model, other_seed.data, tmp_path).name not in names


@pytest.mark.mnist
@pytest.mark.fashion_mnist
def test_the_real_datasets_get_different_keys(compose_train, tmp_path):
    names = {
        checkpoint_path(cfg.model, cfg.data, tmp_path).name
        for cfg in (compose_train([]), compose_train(["data=fashion_mnist"]), compose_train(["data=synthetic"]))
    }
    assert len(names) == 3


@pytest.mark.parametrize("shape", ["[1,28,28]", "[3,32,32]"])
@pytest.mark.parametrize("model", MODEL_RECIPES)
def test_every_model_recipe_builds_for_the_datas_shape_or_refuses_it(compose_train, model, shape):
    """The shape-aware recipes (their net reads ``image_shape``) build for both shapes, run a forward and a backward
    pass and give the data's classes; MNIST's own networks (LeNet5, the judges, DLG's LeNet) do so for 1x28x28 and
    refuse 3x32x32 in one line."""
    cfg = compose_train(["data=synthetic", f"data.image_shape={shape}", "data.num_classes=7", f"model={model}"])
    if shape == "[3,32,32]" and "image_shape" not in cfg.model.net:
        with pytest.raises(ConfigError, match=r"cannot take data=synthetic's images of shape \[3, 32, 32\]"):
            validate_recipe(cfg.model, data=cfg.data)
        return
    validate_recipe(cfg.model, data=cfg.data)
    net = instantiate(cfg.model.net)
    logits = net(torch.rand(2, *cfg.data.image_shape))
    assert logits.shape == (2, 7)
    logits.logsumexp(dim=1).sum().backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)


@pytest.mark.parametrize("model", ["resnet", "cnn"])
def test_synthetic_colour_images_train_end_to_end(compose_train, model, tmp_path):
    cfg = compose_train(
        [*TINY_SYNTHETIC, "data.image_shape=[3,32,32]", f"model={model}", "model.max_epochs=1", "model.net.width=8"]
        + (["model.net.depth=8"] if model == "resnet" else [])
    )
    metrics = run_train(cfg)
    assert {"train/acc", "val/acc", "test/acc", "test/loss"} <= set(metrics)
    assert all(math.isfinite(v) for v in metrics.values())
    assert (tmp_path / "metrics.json").exists()
    cached = checkpoint_path(cfg.model, cfg.data, cfg.paths.cache_dir)
    assert cached.exists() and cache.read(cached)["spec"]["data"]["name"] == "synthetic"


def test_dpsgd_refuses_batch_norm_before_training_and_trains_group_norm(compose_train, monkeypatch):
    cfg = compose_train([*TINY_SYNTHETIC, "data.image_shape=[3,16,16]", "model=cnn", "defense=dpsgd"])
    built = training.build_datamodule
    monkeypatch.setattr(training, "build_datamodule", lambda *a, **k: pytest.fail("trained before refusing"))
    with pytest.raises(ConfigError, match=r"defense=dpsgd cannot train SmallVGG privately .*model.net.norm=group"):
        run_train(cfg)
    monkeypatch.setattr(training, "build_datamodule", built)
    overrides = ["model=resnet", "model.net.norm=group", "model.net.depth=8", "model.net.width=8"]
    cfg = compose_train([*TINY_SYNTHETIC, "data.image_shape=[3,16,16]", *overrides, "defense=dpsgd"])
    cfg.model.max_epochs, cfg.model.batch_size, cfg.model.optimizer.lr = 1, 60, 0.01
    recipe = recipe_with_defense(cfg, "model")
    _, metrics = fit_classifier(recipe, cfg.data, cfg.trainer, 0, enable_checkpointing=False, test=False)
    assert metrics["privacy/epsilon"] > 0 and math.isfinite(metrics["val/loss"])


@pytest.mark.usefixtures("no_training")
@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["data.image_shape=[3,32,32]"], r"model.net \(LeNet5\) cannot take data=synthetic's images .*model=cnn"),
        (["model=mlp", "model.net.num_classes=3"], r"gives outputs of shape \(3,\) .*10 classes.*num_classes=10"),
    ],
)
def test_a_model_that_does_not_fit_the_data_stops_before_training(compose_train, overrides, match):
    with pytest.raises(ConfigError, match=match):
        run_train(compose_train([*TINY_SYNTHETIC, *overrides]))


def test_checking_the_network_leaves_the_global_rng_alone(compose_train):
    cfg = compose_train(["data=synthetic", "data.image_shape=[3,32,32]", "model=resnet"])
    torch.manual_seed(5)
    before = torch.get_rng_state()
    validate_recipe(cfg.model, data=cfg.data)
    assert torch.equal(torch.get_rng_state(), before)


def test_missing_cifar10_is_one_line_naming_what_to_set(compose_train, tmp_path):
    overrides = ["data=cifar10", "model=resnet", f"data.source.root={tmp_path}", "data.source.download=false"]
    with pytest.raises(DataUnavailableError, match=r"CIFAR-10 is not under .*data.source.root=.*CIFAR10_ROOT="):
        run_train(compose_train(overrides))


@pytest.mark.fashion_mnist
def test_fashion_mnist_trains_lenet5(compose_train):
    cfg = compose_train(["data=fashion_mnist", "model.members=500", "model.max_epochs=1", "data.val_size=1000"])
    metrics = run_train(cfg)
    assert 0 <= metrics["test/acc"] <= 1 and math.isfinite(metrics["test/loss"])
    spec = checkpoint_spec(cfg.model, cfg.data)
    assert spec["data"]["name"] == "fashion_mnist" and spec["recipe"]["net"]["num_classes"] == 10


@pytest.mark.parametrize("data", ["synthetic", "fashion_mnist"])
def test_the_attacks_stop_before_any_work_on_other_data(compose_attack, monkeypatch, data):
    monkeypatch.setattr(pipelines, "provision_target", lambda cfg: pytest.fail("a target was provisioned"))
    with pytest.raises(ConfigError, match=f"attack=inversion reads MNIST only so far; data={data} is supported by"):
        run_attack(compose_attack(["attack=inversion", f"data={data}"]))


@pytest.mark.parametrize("attack", [a for a in pipelines.available_attacks() if a not in pipelines.ATTACKS_ON_ANY_DATA])
def test_every_attack_that_reads_mnist_itself_stops_on_other_data(compose_attack, monkeypatch, attack):
    monkeypatch.setattr(pipelines, "provision_target", lambda cfg: pytest.fail("a target was provisioned"))
    with pytest.raises(ConfigError, match=f"attack={attack} reads MNIST only so far; data=synthetic") as error:
        run_attack(compose_attack([f"attack={attack}", "data=synthetic"]))
    assert "\n" not in str(error.value) and "attack=distillation" in str(error.value)


def test_the_attacks_that_read_the_data_are_stealing_membership_the_audit_and_gradient_inversion():
    assert set(pipelines.ATTACKS_ON_ANY_DATA) == {"distillation", "membership", "audit", "gradient_inversion"}
    assert set(pipelines.ATTACKS_ON_ANY_DATA) <= set(pipelines.available_attacks())


@pytest.mark.slow
def test_train_py_names_the_missing_dataset_in_one_line(tmp_path, cache_dir):
    missing = Path(tmp_path) / "nowhere"
    args = ["data=cifar10", "model=resnet", f"data.source.root={missing}", "data.source.download=false", "logger=none"]
    result = run_script("train.py", args, tmp_path, cache_dir)
    assert result.returncode == 2
    assert "error: CIFAR-10 is not under" in result.stderr and "Traceback" not in result.stderr
