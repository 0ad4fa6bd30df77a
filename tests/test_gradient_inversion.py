"""Gradient inversion (DLG, iDLG, IG): client gradient, label recovery, matching objectives, assignment, config,
runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from privacy_attacks.attacks.reconstruction import gradient_inversion
from privacy_attacks.attacks.reconstruction.engine import ReconstructionModule, fit_reconstruction
from privacy_attacks.attacks.reconstruction.gradient_assignment import best_assignment
from privacy_attacks.attacks.reconstruction.gradient_client import SimulatedClient
from privacy_attacks.attacks.reconstruction.gradient_inversion import last_linear, validate
from privacy_attacks.attacks.reconstruction.gradient_labels import recover_labels
from privacy_attacks.attacks.reconstruction.gradient_matching import CosineDistance, GradientMatching, SquaredL2Distance
from privacy_attacks.attacks.reconstruction.metrics import image_similarity
from privacy_attacks.data.mnist import load_mnist, split_training_indices
from privacy_attacks.errors import ConfigError
from privacy_attacks.models import LeNet5
from privacy_attacks.models.lenet_sigmoid import LeNetSigmoid
from tests.conftest import SMALL_TARGET, run_script


def _model(seed: int = 0) -> LeNetSigmoid:
    torch.manual_seed(seed)
    return LeNetSigmoid().eval().requires_grad_(False)


def test_shared_gradient_equals_autograd_of_the_clients_loss():
    model = _model()
    images, labels = torch.rand(3, 1, 28, 28), torch.tensor([1, 7, 7])
    shared = SimulatedClient(model, images, labels).shared_gradient()
    reference = LeNetSigmoid()
    reference.load_state_dict(model.state_dict())
    expected = torch.autograd.grad(F.cross_entropy(reference(images), labels), list(reference.parameters()))
    assert len(shared) == len(expected)
    for got, want in zip(shared, expected):
        assert not got.requires_grad
        torch.testing.assert_close(got, want)
    assert all(not p.requires_grad and p.grad is None for p in model.parameters())  # the shared model is untouched


@pytest.mark.parametrize("net", [LeNetSigmoid, LeNet5])
def test_idlg_label_recovery_is_exact_for_every_class_on_a_batch_of_one(net):
    torch.manual_seed(0)
    model = net().eval().requires_grad_(False)
    for label in range(10):
        image = torch.rand(1, 1, 28, 28)
        gradient = SimulatedClient(model, image, torch.tensor([label])).shared_gradient()
        weight, bias = last_linear(model, gradient)
        assert recover_labels(weight, 1, bias).tolist() == [label]
        assert recover_labels(weight, 1).tolist() == [label]  # iDLG's rule uses the weights alone


def test_batch_label_recovery_finds_distinct_labels_and_counts():
    model = _model()
    labels = torch.tensor([2, 5, 9, 0])
    gradient = SimulatedClient(model, torch.rand(4, 1, 28, 28), labels).shared_gradient()
    weight, bias = last_linear(model, gradient)
    assert recover_labels(weight, 4, bias).tolist() == sorted(labels.tolist())
    assert len(recover_labels(weight, 7, bias)) == 7  # always B labels


@pytest.mark.parametrize("labels", [[3, 3, 7, 1], [2, 2, 2, 5], [0, 0, 9, 9], [6, 6, 6, 6], [1, 4, 4, 8]])
def test_batch_label_recovery_counts_repeated_labels_when_mean_predictions_are_alike(labels):
    # The last layer's gradient of a batch whose softmax outputs are all uniform (p = 1/C), features h_i >= 0:
    # dL/dW = 1/B sum_i (p - y_i) h_i^T, dL/db = p - counts / B: the rule's assumption holds exactly.
    generator = torch.Generator().manual_seed(sum(labels))
    batch, classes = len(labels), 10
    features = torch.rand(batch, 16, generator=generator) + 0.1
    error = torch.full((batch, classes), 1 / classes) - F.one_hot(torch.tensor(labels), classes).float()
    weight, bias = error.T @ features / batch, error.mean(dim=0)
    assert recover_labels(weight, batch, bias).tolist() == sorted(labels)


@pytest.mark.parametrize("labels", [[3, 3, 7, 1], [2, 2, 2, 5], [1, 4, 4, 8], [5, 5, 5, 5, 0, 0, 2, 9]])
def test_batch_label_recovery_finds_every_present_class_of_a_real_gradient(labels):
    model = _model()
    gradient = SimulatedClient(model, torch.rand(len(labels), 1, 28, 28), torch.tensor(labels)).shared_gradient()
    recovered = recover_labels(*last_linear(model, gradient)[:1], len(labels), last_linear(model, gradient)[1])
    assert set(recovered.tolist()) == set(labels) and len(recovered) == len(labels)


@pytest.mark.parametrize("distance", [SquaredL2Distance(), CosineDistance()])
def test_matching_objective_is_minimal_at_the_private_batch(distance):
    model = _model()
    images, labels = torch.rand(2, 1, 28, 28), torch.tensor([3, 4])
    gradient = SimulatedClient(model, images, labels).shared_gradient()
    objective = GradientMatching(model, gradient, 2, distance, labels=labels, restarts=2)
    stacked = torch.cat([images, torch.rand(2, 1, 28, 28)])  # restart 0: the truth; restart 1: noise
    losses = objective(stacked)
    assert losses.shape == (4,)
    assert losses[:2].abs().max() < 1e-5 and (losses[2:] > 1e-3).all()
    assert losses[0] == losses[1]  # one batch, one distance


def test_dlg_soft_labels_are_trained_with_the_images_and_the_model_is_untouched():
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    image, label = torch.rand(1, 1, 28, 28), torch.tensor([6])
    gradient = SimulatedClient(model, image, label).shared_gradient()
    objective = GradientMatching(model, gradient, 1, SquaredL2Distance(), labels=None)
    soft_before = objective.soft_labels.detach().clone()
    module = ReconstructionModule(objective, optimizer=torch.optim.Adam, steps=5)
    start = module()[0].detach().sum()
    fit_reconstruction(module, {"accelerator": "cpu", "devices": 1}, enable_progress_bar=False)
    assert not torch.equal(objective.soft_labels.detach(), soft_before)
    assert module.best_loss.sum() < start
    images, _ = module.reconstructions()
    assert images.min() >= 0 and images.max() <= 1
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_best_assignment_undoes_a_permutation():
    originals = torch.rand(5, 1, 28, 28)
    permutation = torch.tensor([3, 0, 4, 1, 2])
    reconstructions = (originals[permutation] + 0.01 * torch.randn(5, 1, 28, 28)).clamp(0, 1)
    order = best_assignment(reconstructions, originals)
    torch.testing.assert_close(reconstructions[order], originals, atol=0.05, rtol=0)


def test_a_client_keeps_the_restart_with_the_lowest_matching_loss(compose_attack, monkeypatch):
    cfg = compose_attack(["attack=gradient_inversion", "method=ig", "batch_size=2", "steps=5", "restarts=3"])
    modules, real_fit = [], gradient_inversion.fit_reconstruction

    def spy_fit(module, *args, **kwargs):
        modules.append(module)
        return real_fit(module, *args, **kwargs)

    monkeypatch.setattr(gradient_inversion, "fit_reconstruction", spy_fit)
    model, images, labels = _model(), torch.rand(2, 1, 28, 28), torch.tensor([4, 1])
    result = gradient_inversion.attack_batch(cfg, model, images, labels, seed=0)
    candidates, losses = modules[0].all_reconstructions()  # (R, B, ...), (R, B): the attack's own losses
    assert not torch.equal(candidates[0], candidates[1])  # restarts differ
    kept = candidates[int(losses.sum(dim=1).argmin())]
    assert {img.numpy().tobytes() for img in result.images} == {img.numpy().tobytes() for img in kept}


@pytest.mark.mnist
def test_tune_clients_come_from_the_validation_split_and_report_clients_from_the_test_set(compose_attack):
    tune = gradient_inversion.private_pool(
        compose_attack(["attack=gradient_inversion", "private_set=tune", "private_pool=50"])
    )[0]
    report = gradient_inversion.private_pool(compose_attack(["attack=gradient_inversion", "private_pool=50"]))[0]
    cfg = compose_attack(["attack=gradient_inversion"])
    train_images, _ = load_mnist(cfg.data.root, train=True)
    test_images, _ = load_mnist(cfg.data.root, train=False)
    validation = train_images[split_training_indices(cfg.data.val_size, cfg.data.split_seed)["val"]]

    def keys(images):
        return {img.numpy().tobytes() for img in images}

    assert keys(tune) <= keys(validation) and keys(report) <= keys(test_images)
    again = gradient_inversion.private_pool(compose_attack(["attack=gradient_inversion", "private_pool=50", "seed=3"]))[
        0
    ]
    assert torch.equal(again, report)  # the attacker's seed does not choose the victims' images


def test_headline_sweep_composes(compose_attack):
    cfg = compose_attack(["attack=gradient_inversion", "method=ig", "batch_size=4"])
    assert cfg.steps == cfg.methods.ig.steps and cfg.optimizer == "adam" and cfg.batch_size == 4
    validate(cfg)
    assert compose_attack(["attack=gradient_inversion", "method=ig", "steps=7"]).steps == 7


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["method=foo"], "dlg, idlg, ig, ig_lbfgs"),
        (["batch_size=200"], "private pool"),
        (["batch_size=16", "num_batches=10"], "private_pool"),
        (["model_state=half"], "init, trained"),
        (["shared_model=resnet"], "lenet5_sigmoid, target"),
        (["steps=0"], "steps"),
        (["private_set=train"], "report, tune"),
    ],
)
def test_bad_input_is_refused_before_any_work(compose_attack, overrides, message):
    with pytest.raises(ConfigError, match=message):
        validate(compose_attack(["attack=gradient_inversion", *overrides]))


@pytest.mark.slow
@pytest.mark.mnist
def test_real_small_multirun_subprocess(tmp_path: Path, cache_dir: Path):
    result = run_script(
        "attack.py",
        [
            "-m",
            "attack=gradient_inversion",
            "method=dlg,idlg,ig,ig_lbfgs",
            "batch_size=1",
            "num_batches=1",
            "steps=6",
            "restarts=1",
            *SMALL_TARGET,
            "logger=none",
            "hydra.sweep.dir=" + str(tmp_path / "sweep"),
            "+trainer.enable_progress_bar=false",
        ],
        tmp_path,
        cache_dir,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = tmp_path / "sweep"
    for job in ("0", "1", "2", "3"):
        metrics = json.loads((sweep / job / "metrics.json").read_text())
        assert metrics["recon/label_acc"] == 1.0 or job == "0"  # DLG's soft labels need more than 6 steps
        saved = torch.load(sweep / job / "reconstructions.pt", weights_only=True)
        scores = image_similarity(saved["images"], saved["originals"])  # the metrics score what was saved
        assert metrics["recon/psnr"] == pytest.approx(scores["psnr"].mean().item(), rel=1e-5)
        assert metrics["recon/label_acc"] == (saved["labels"] == saved["original_labels"]).float().mean().item()
        assert saved["images"].shape == (1, 1, 28, 28) and 0 <= saved["images"].min() <= saved["images"].max() <= 1
        assert (sweep / job / "reconstructions.png").exists()
    assert (sweep / "summary.csv").exists() and (sweep / "quality.png").exists()
    assert "recon/psnr" in result.stdout


def test_unknown_method_exits_with_one_clear_line(tmp_path: Path, cache_dir: Path):
    result = run_script(
        "attack.py",
        ["attack=gradient_inversion", "method=foo", "logger=none", *SMALL_TARGET, f"hydra.run.dir={tmp_path / 'run'}"],
        tmp_path,
        cache_dir,
    )
    assert result.returncode == 2
    assert "method='foo' is not one of the choices: dlg, idlg, ig, ig_lbfgs" in result.stderr
    assert "Traceback" not in result.stderr
