"""Training on the real MNIST (marked ``mnist``): short runs on subsets."""

import json

import pytest
import torch

from privacy_attacks.data import load_mnist
from privacy_attacks.pipelines import run_train
from privacy_attacks.targets import provision_classifier
from tests.conftest import mnist_root, run_script

pytestmark = pytest.mark.mnist
SHORT = ["model.max_epochs=1", "model.members=2000"]


def test_short_training_writes_metrics_and_registers_the_target(compose_train, tmp_path, cache_dir):
    cfg = compose_train(SHORT)
    metrics = run_train(cfg)
    assert {"train/acc", "val/acc", "test/acc", "test/loss"} <= set(metrics)
    assert json.loads((tmp_path / "metrics.json").read_text())["test/acc"] == pytest.approx(metrics["test/acc"])
    assert metrics["test/acc"] > 0.5  # it learned something from 2,000 images

    # train -> save -> provision -> predict: the cached target is the network that was tested.
    target = provision_classifier(cfg.model, cfg.data, cfg.trainer, cache_dir)
    assert target.metrics["test/acc"] == pytest.approx(metrics["test/acc"])
    images, labels = load_mnist(mnist_root(), train=False)
    with torch.no_grad():
        accuracy = (target.net(images).argmax(1) == labels).float().mean().item()
    assert accuracy == pytest.approx(metrics["test/acc"], abs=1e-6)


def test_same_seed_gives_bit_identical_metrics_on_cpu(compose_train):
    first = run_train(compose_train([*SHORT, "seed=3"]))
    second = run_train(compose_train([*SHORT, "seed=3"]))
    first.pop("fit_time_s"), second.pop("fit_time_s")
    assert first == second


@pytest.mark.slow
def test_train_script_writes_a_run_folder(tmp_path, cache_dir):
    result = run_script("train.py", [*SHORT, "+trainer.enable_progress_bar=false"], tmp_path, cache_dir)
    assert result.returncode == 0, result.stderr[-2000:]
    (run_dir,) = (tmp_path / "outputs" / "train").iterdir()
    assert "test/acc" in json.loads((run_dir / "metrics.json").read_text())
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))


@pytest.mark.slow
def test_train_script_without_a_logger_leaves_out_the_learning_rate_monitor(tmp_path, cache_dir):
    overrides = [*SHORT, "logger=none", "+trainer.enable_progress_bar=false"]
    result = run_script("train.py", overrides, tmp_path, cache_dir)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "LearningRateMonitor left out" in result.stdout + result.stderr


@pytest.mark.slow
def test_gpu_trainer_without_a_gpu_is_a_clear_error(tmp_path, cache_dir):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    for script, overrides in (("train.py", []), ("attack.py", ["attack=inversion"])):
        result = run_script(script, [*overrides, "trainer=gpu"], tmp_path, cache_dir)
        assert result.returncode == 2
        assert "sees no CUDA GPU" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_attack_script_without_an_attack_exits_cleanly(tmp_path, cache_dir):
    result = run_script("attack.py", [], tmp_path, cache_dir)
    assert result.returncode == 2
    assert "attack=<name>" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_an_interrupted_training_resumes_from_its_last_checkpoint(tmp_path, cache_dir):
    """A 2-epoch run stopped after its first epoch (16 steps of 128 of the 2,000 members) goes on from its checkpoint
    with its schedule: the resumed run trains the second epoch, so its weights move."""
    recipe = ["model.max_epochs=2", "model.members=2000", "+trainer.enable_progress_bar=false"]
    first = run_script("train.py", [*recipe, "+trainer.max_steps=16"], tmp_path, cache_dir)
    assert first.returncode == 0, first.stderr[-2000:]
    (run_dir,) = (tmp_path / "outputs" / "train").iterdir()
    last = run_dir / "checkpoints" / "last.ckpt"
    stopped = torch.load(last, map_location="cpu", weights_only=False)
    assert stopped["epoch"] == 0 and stopped["optimizer_states"][0]["param_groups"][0]["lr"] > 0
    (tmp_path / "resumed").mkdir()
    resumed = run_script("train.py", [*recipe, f"ckpt_path={last}"], tmp_path / "resumed", cache_dir)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "Restoring states from the checkpoint" in resumed.stdout + resumed.stderr
    assert "other settings" not in resumed.stdout + resumed.stderr  # the same run, going on
    (resumed_dir,) = (tmp_path / "resumed" / "outputs" / "train").iterdir()
    done = torch.load(resumed_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert done["epoch"] == 1
    assert any(not torch.equal(done["state_dict"][k], v) for k, v in stopped["state_dict"].items())
