"""train.py beyond MNIST and LeNet5: every data config and model recipe composed from the real configs, tiny fits on
synthetic images and Fashion-MNIST, cache keys that name the dataset (MNIST's unchanged), one-line refusals before
training, and every attack on any data."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict

import privacy_attacks.pipelines as pipelines
import privacy_attacks.training as training
from privacy_attacks import cache
from privacy_attacks.defenses import recipe_with_defense
from privacy_attacks.errors import ConfigError, DataUnavailableError
from privacy_attacks.pipelines import run_attack, run_train
from privacy_attacks.targets import checkpoint_path, checkpoint_spec
from privacy_attacks.training import fit_classifier, validate_recipe
from tests.conftest import CONF_DIR, mnist_root, run_script
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
        size = source.train_size
        if size is None:  # known once read (a class subset): read it where its files are
            if mnist_root() is None:
                pytest.skip(f"data={name}'s size is known once its files are read; MNIST_ROOT is not set")
            size = len(source.load().train_labels)
        assert 0 < data.val_size < size  # val_size makes sense for each dataset


def test_mnist_config_keeps_its_keys_and_values():
    data = OmegaConf.load(CONF_DIR / "data" / "mnist.yaml")
    assert data._target_ == "privacy_attacks.data.MNISTDataModule"
    assert (data.download, data.val_size, data.split_seed, data.eval_batch_size) == (True, 5000, 0, 2000)
    assert data.batch_order == "hashed" and OmegaConf.to_container(data)["root"] == "${oc.env:MNIST_ROOT,data}"


@pytest.mark.mnist
def test_mnist_targets_keep_their_keys(compose_train, tmp_path, unkeyed_threads):
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
    """Every recipe (LeNet5's and the judges' too: each net reads the data's ``image_shape``) builds for both shapes,
    runs a forward and a backward pass and gives the data's classes."""
    cfg = compose_train(["data=synthetic", f"data.image_shape={shape}", "data.num_classes=7", f"model={model}"])
    assert "image_shape" in cfg.model.net
    if cfg.model.get("members") is not None:  # the judges' MNIST-sized halves: a window of the synthetic pool
        with open_dict(cfg.model):
            cfg.model.members, cfg.model.member_offset = 500, 0
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


class TupleNet(torch.nn.Module):
    """A network whose forward returns its logits and its features: the framework reads one logits tensor."""

    def __init__(self, **_):
        super().__init__()
        self.linear = torch.nn.Linear(784, 10)

    def forward(self, images):
        features = images.flatten(1)
        return self.linear(features), features


class TenOutputs(torch.nn.Module):
    """A network with its ten outputs written into it (no num_classes argument)."""

    def __init__(self, **_):
        super().__init__()
        self.linear = torch.nn.Linear(784, 10)

    def forward(self, images):
        return self.linear(images.flatten(1))


class ListNet(torch.nn.Module):
    """Layers kept in a plain Python list: torch sees no parameter of them."""

    def __init__(self, **_):
        super().__init__()
        self.layers = [torch.nn.Flatten(), torch.nn.Linear(784, 10)]

    def forward(self, images):
        for layer in self.layers:
            images = layer(images)
        return images


@pytest.mark.usefixtures("no_training")
@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (
            ["data.image_shape=[3,32,32]", "model.net.image_shape=[1,28,28]"],
            r"model.net \(LeNet5\) cannot take data=synthetic's images .*model=cnn",
        ),
        (["data.image_shape=[1,8,8]"], r"LeNet5 takes images of at least 12x12, not 8x8 \(data.image_shape\).*mlp"),
        (["model=mlp", "model.net.num_classes=3"], r"gives outputs of shape \(3,\) .*10 classes.*num_classes=10"),
        (
            ["data.num_classes=3", "model.net._target_=tests.test_any_data.TenOutputs", "~model.net.num_classes"],
            r"gives outputs of shape \(10,\) .*3 classes: give TenOutputs a num_classes argument",
        ),
        (["model.net._target_=tests.test_any_data.TupleNet"], r"returns a tuple, not a tensor: its forward must"),
        (["model.net._target_=torch.nn.Identity"], r"gives outputs of shape \(1, 28, 28\) per image: a classifier's"),
        (["model.net._target_=tests.test_any_data.ListNet"], r"\(ListNet\) has no trainable parameters: .*ModuleList"),
        (["model.net._target_=no_such_module.Net"], r"cannot be built: .*No module named 'no_such_module'"),
        (["data.image_shape=[3,32,32]", "data.mean=[0.5,0.5]", "model=cnn"], r"data.mean=\[0.5, 0.5\] .*per channel"),
        (["data.image_shape=32"], r"data.image_shape=\[32\] is not allowed: it must be \[channels, height, width\]"),
        (["data.num_classes=three"], r"data.num_classes='three' is not allowed"),
        (["data.num_classes=3.0"], r"data.num_classes=3.0 is not allowed"),
        (["data.std=null"], r"data.mean is set but data.std is not: .*normalise with both or neither"),
        (["~data.source._target_"], r"data=synthetic's source node has no _target_, .*defaults: \[image_folder\]"),
        (["~data.source"], r"data=synthetic has no source node, so nothing says how to read it"),
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


COLOUR = [*TINY_SYNTHETIC, "data.image_shape=[3,32,32]", "data.num_classes=5", "target.members=200"]
# Judges of the tiny synthetic pool (240 training images): disjoint halves, as on MNIST.
TINY_JUDGES = ["evaluator.members=100", "judge.members=100", "judge.member_offset=100"]
COLOUR_TARGETS = {
    "cnn": (["model@target=cnn", "target.net.width=8"], "body.stage2"),
    "resnet": (["model@target=resnet", "target.net.depth=8", "target.net.width=8"], "stage1.0.conv2"),
}


@pytest.mark.parametrize("model", sorted(COLOUR_TARGETS))
def test_output_and_feature_inversion_run_on_colour_images_of_any_model(compose_attack, model):
    """3x32x32 synthetic images: every class of a cnn/resnet target inverted at the data's shape and scored by two
    judges trained on the same data; its features inverted at a module path, from noise and from a learned decoder
    sized from the feature's shape and the image's."""
    target, layer = COLOUR_TARGETS[model]
    base = [*COLOUR, "target.max_epochs=1", *TINY_JUDGES, *target]
    cfg = compose_attack([*base, "attack=inversion", "steps=3", "restarts=1"])
    metrics = run_attack(cfg)
    saved = torch.load(Path(cfg.paths.output_dir) / "reconstructions.pt", weights_only=True)
    assert saved["images"].shape == (5, 3, 32, 32) and saved["labels"].tolist() == list(range(5))
    assert all(0 <= metrics[f"inversion/{k}"] <= 1 for k in ("target_acc", "evaluator_acc", "report_judge_acc"))
    feature = ["attack=feature_inversion", f"layer={layer}", "steps=3", "num_images=2", "private_pool=4"]
    learned = ["init=network", "anchor_lambda=0.03", "inversion_network.train_images=100", "inversion_network.epochs=1"]
    for extra in ([], learned):
        cfg = compose_attack([*base, *feature, *extra])
        metrics = run_attack(cfg)
        saved = torch.load(Path(cfg.paths.output_dir) / "reconstructions.pt", weights_only=True)
        assert saved["images"].shape == saved["originals"].shape == (2, 3, 32, 32)
        assert math.isfinite(metrics["recon/psnr"]) and ("recon/psnr_network" in metrics) == bool(extra)


@pytest.mark.fashion_mnist
def test_output_and_feature_inversion_run_on_fashion_mnist_with_lenet5(compose_attack):
    base = ["data=fashion_mnist", "data.val_size=1000", "target.members=2000", "target.max_epochs=1"]
    judges = ["evaluator.members=2000", "judge.members=2000", "judge.member_offset=2000"]
    cfg = compose_attack([*base, *judges, "attack=inversion", "steps=3", "restarts=1"])
    assert run_attack(cfg)["inversion/report_judge_acc"] >= 0
    layer = ["attack=feature_inversion", "layer=conv2", "steps=3", "num_images=2", "private_pool=4"]
    decoder = ["inversion_network.train_images=200", "inversion_network.epochs=1"]
    metrics = run_attack(compose_attack([*base, *layer, *decoder]))
    assert math.isfinite(metrics["recon/psnr"]) and math.isfinite(metrics["recon/psnr_network"])


def test_a_layer_the_target_lacks_stops_before_any_work_listing_its_layers(compose_attack, monkeypatch):
    monkeypatch.setattr(pipelines, "provision_target", lambda cfg: pytest.fail("a target was provisioned"))
    cfg = compose_attack([*COLOUR, "model@target=cnn", "attack=feature_inversion", "layer=conv2"])
    with pytest.raises(
        ConfigError, match=r"layer='conv2' is not a layer of SmallVGG: choose one of body, logits, "
    ) as error:
        run_attack(cfg)
    assert "body.stage1.0" in str(error.value) and "\n" not in str(error.value)


def test_every_attack_config_runs_on_any_data():
    """No attack is held to MNIST any more: each reads its shapes, classes and images from ``data=``."""
    assert not hasattr(pipelines, "ATTACKS_ON_ANY_DATA")


@pytest.mark.slow
def test_train_py_names_the_missing_dataset_in_one_line(tmp_path, cache_dir):
    missing = Path(tmp_path) / "nowhere"
    args = ["data=cifar10", "model=resnet", f"data.source.root={missing}", "data.source.download=false", "logger=none"]
    result = run_script("train.py", args, tmp_path, cache_dir)
    assert result.returncode == 2
    assert "error: CIFAR-10 is not under" in result.stderr and "Traceback" not in result.stderr


def test_a_value_a_config_leaves_to_the_user_is_one_line_saying_what_to_set():
    from omegaconf import OmegaConf

    from privacy_attacks.cli import one_line

    cfg = OmegaConf.create({"data": {"num_classes": "???", "classes": "${data.num_classes}"}})
    for read in (lambda: cfg.data.num_classes, lambda: cfg.data.classes):  # the value, or an interpolation to it
        with pytest.raises(Exception) as error:
            read()
        assert one_line(error.value) == (
            "Missing mandatory value: data.num_classes: set data.num_classes=<value> on the command line or in the "
            "config file that leaves it ???."
        )
    OmegaConf.set_struct(cfg, True)
    with pytest.raises(Exception) as error:
        _ = cfg.data.root
    assert one_line(error.value) == "Key 'root' is not in struct (at data.root)"  # the key, on the one line


def test_a_misspelt_optimiser_stops_before_any_work_in_one_line(compose_train):
    from privacy_attacks.pipelines import check_train

    with pytest.raises(ConfigError, match=r"^model.optimizer \(torch.optim.Adamm\) cannot be built: .*Adamm[^\n]*$"):
        check_train(compose_train(["model.optimizer._target_=torch.optim.Adamm"]))
    with pytest.raises(ConfigError, match=r"^model.scheduler \(torch.optim.lr_scheduler.Cosine\) cannot be built"):
        check_train(compose_train(["model.scheduler._target_=torch.optim.lr_scheduler.Cosine"]))
