"""Model stealing end to end: bad input, shifts, headline overrides, real runs (in-process and a multirun), on MNIST,
synthetic colour images and Fashion-MNIST, and pools or students that do not fit the data."""

import json
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

import privacy_attacks.pipelines as pipelines
from privacy_attacks.errors import ConfigError
from privacy_attacks.models import LeNet5
from privacy_attacks.pipelines import run_attack
from privacy_attacks.targets import provision_target
from tests.conftest import run_script


@pytest.mark.parametrize(
    "override, message",
    [
        ("query_budget=0", "query_budget=0 is not allowed"),
        ("query_budget=-5", "query_budget=-5 is not allowed"),
        ("query_budget=70000", "mnist query pool holds 60000 images"),
        ("evaluation=test", "evaluation='test' is not one of the choices: report, tune"),
        ("queries=noise query_budget=100001", "noise query pool holds 100000"),
        ("loss=l1", "loss='l1' is not one of the choices: mse, kl, kl_hinton, soft_ce, hard"),
        ("api.output=top5", "api.output='top5' is not one of the choices: probs, logits, label, rounded"),
        ("queries=cifar", "queries='cifar' is not one of the choices: mnist, fashion_mnist, noise"),
        ("temperature=0", "temperature=0"),
        ("temperature=-2", "temperature=-2"),
        ("schedule.steps=2.5", "schedule.steps=2.5 is not allowed: it must be an integer > 0"),
        ("schedule.max_steps=0", "schedule.max_steps=0 is not allowed"),
        ("student.shift=1.5", "student.shift=1.5 is not allowed: it must be an integer >= 0"),
        ("student.batch_size=64.0", "student.batch_size=64.0 is not allowed: it must be an integer > 0"),
        (
            "loss=mse losses.mse._target_=torch.nn.MSELoss",
            "losses.mse builds an object of class MSELoss, not a distillation loss",
        ),
        ("loss=mse losses.mse._target_=no.Loss", "losses.mse (no.Loss) cannot be built"),
    ],
)
def test_bad_input_fails_before_any_work(compose_attack, tmp_path, override, message):
    cfg = compose_attack(["attack=distillation", *override.split(), f"paths.cache_dir={tmp_path}/empty_cache"])
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        run_attack(cfg)
    assert not (tmp_path / "empty_cache").exists() or not any((tmp_path / "empty_cache").iterdir())


def test_local_shifts_only_below_the_shift_budget(compose_attack):
    from privacy_attacks.attacks.stealing.attack import student_shift

    assert student_shift(compose_attack(["attack=distillation", "query_budget=1000"])) == 1
    assert student_shift(compose_attack(["attack=distillation", "query_budget=10000"])) == 0
    assert (
        student_shift(compose_attack(["attack=distillation", "query_budget=10000", "student.shift_max_budget=null"]))
        == 1
    )


def test_headline_overrides_compose(compose_attack):
    cfg = compose_attack(
        ["attack=distillation", "loss=mse", "query_budget=10000", "api.output=rounded", "api.decimals=3"]
    )
    assert cfg.loss == "mse" and cfg.query_budget == 10000 and cfg.queries == "mnist"
    assert cfg.losses.kl.temperature == cfg.temperature
    assert cfg.api.outputs.rounded.decimals == 3
    assert OmegaConf.select(cfg, "summary.figure._target_").endswith("accuracy_vs_queries")


def test_the_figure_title_names_the_student_and_target_networks_unless_a_sweep_varies_one(compose_attack):
    from privacy_attacks.attacks.stealing.figures import figure_title
    from privacy_attacks.callbacks.sweep_summary import resolved

    def title(overrides, varying=()):  # the summary node as the sweep's end reads it: copied out of the config
        figure = resolved(compose_attack(["attack=distillation", *overrides]).summary)["figure"]
        return figure_title(figure["target_net"], figure["student_net"], list(varying))

    assert title([]).endswith(": LeNet5 student of a LeNet5 target")
    assert title(["net@attacker_net=cnn"]).endswith(": SmallVGG student of a LeNet5 target")
    assert title(["net@target.net=torchvision"]).endswith(": resnet18 student of a resnet18 target")
    for swept in ("net@attacker_net", "model@target", "target.net.width", "student.net.width"):  # a network varies
        assert title([], varying=[swept, "loss"]) == "Model stealing by distillation"
    assert title([], varying=["loss"]).endswith(": LeNet5 student of a LeNet5 target")


@pytest.mark.mnist
def test_distillation_run_writes_metrics_and_student(compose_attack, monkeypatch):
    from privacy_attacks.attacks.stealing import attack

    started, real_fit = [], attack.fit_student

    def spy_fit(net, *args, **kwargs):
        started.append({k: v.clone() for k, v in net.state_dict().items()})
        return real_fit(net, *args, **kwargs)

    monkeypatch.setattr(attack, "fit_student", spy_fit)
    cfg = compose_attack(["attack=distillation", "query_budget=200", "schedule.steps=20", "api.output=rounded"])
    assert cfg.seed == cfg.target.seed == 0  # the defaults that once gave the student the target's initial weights
    metrics = run_attack(cfg)
    out = cfg.paths.output_dir
    assert metrics["queries/used"] == 200 and metrics["steps"] == 20
    torch.manual_seed(cfg.target.seed)  # the target's training seeds the global RNG, then builds its network
    target_init = instantiate(cfg.target.net).state_dict()
    assert not any(torch.equal(started[0][k], target_init[k]) for k in target_init if k.endswith("weight"))
    assert metrics == run_attack(cfg) | {"fit_time_s": metrics["fit_time_s"]}  # same seed, same numbers
    saved = torch.load(Path(out) / "student.pt", weights_only=True)
    LeNet5().load_state_dict(saved["state_dict"])
    assert json.loads((Path(out) / "metrics.json").read_text())["queries/used"] == 200


@pytest.mark.mnist
def test_tune_evaluation_scores_on_the_validation_split(compose_attack):
    cfg = compose_attack(["attack=distillation", "query_budget=100", "schedule.steps=5", "evaluation=tune"])
    report = compose_attack(["attack=distillation", "query_budget=100", "schedule.steps=5"])
    tuned, reported = run_attack(cfg), run_attack(report)
    target = provision_target(cfg)
    assert tuned["target/acc"] == pytest.approx(target.metrics["val/acc"], abs=1e-6)  # the validation split itself
    assert reported["target/acc"] != tuned["target/acc"]


@pytest.mark.slow
@pytest.mark.mnist
def test_multirun_subprocess_writes_summary_and_figure(tmp_path, cache_dir):
    args = [
        "-m",
        "attack=distillation",
        "loss=mse,kl",
        "query_budget=30,60",
        "schedule.steps=5",
        *[f"target.{o}" for o in ("max_epochs=2", "members=5000")],
        "logger=none",
        "+trainer.enable_progress_bar=false",
        f"hydra.sweep.dir={tmp_path}/sweep",
    ]
    result = run_script("attack.py", args, tmp_path, cache_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = tmp_path / "sweep"
    lines = (sweep / "summary.csv").read_text().strip().splitlines()
    assert len(lines) == 1 + 4
    assert "student/agreement" in lines[0] and "loss" in lines[0]
    assert (sweep / "accuracy_vs_queries.png").stat().st_size > 0
    assert "Sweep summary" in result.stdout
    for job in range(4):
        assert (sweep / str(job) / "student.pt").exists()


TINY_SYNTHETIC = ["data=synthetic", "data.source.train_size=300", "data.source.test_size=60", "data.val_size=60"]
TINY_STEALING = ["attack=distillation", "target.members=200", "target.max_epochs=1", "query_budget=100"]


@pytest.mark.parametrize(
    "model",
    [["model@target=cnn", "target.net.width=8"], ["model@target=resnet", "target.net.depth=8", "target.net.width=8"]],
)
def test_stealing_runs_on_colour_images_of_any_shape(compose_attack, model):
    """3x32x32 synthetic images: the dataset's own pool, a student of the target's architecture built for the data,
    scored on the dataset's test images (report) and validation split (tune)."""
    colour = ["data.image_shape=[3,32,32]", "data.mean=[0.5,0.4,0.3]", "data.std=[0.25,0.25,0.25]"]
    overrides = [*TINY_SYNTHETIC, *colour, "data.num_classes=5", *TINY_STEALING, *model]
    cfg = compose_attack([*overrides, "schedule.steps=10"])
    assert cfg.queries == "synthetic" and cfg.student.net._target_ == cfg.target.net._target_
    metrics = run_attack(cfg)
    assert metrics["queries/used"] == 100 and metrics["steps"] == 10
    assert all(0 <= metrics[k] <= 1 for k in ("student/acc", "student/agreement", "target/acc"))
    saved = torch.load(Path(cfg.paths.output_dir) / "student.pt", weights_only=True)
    student = instantiate(OmegaConf.create(saved["net"]))
    student.load_state_dict(saved["state_dict"])
    assert student.eval()(torch.rand(2, 3, 32, 32)).shape == (2, 5)
    tuned = run_attack(compose_attack([*overrides, "schedule.steps=5", "evaluation=tune", "queries=noise"]))
    assert tuned["target/acc"] == pytest.approx(provision_target(cfg).metrics["val/acc"], abs=1e-6)


def test_a_student_of_another_network_than_the_targets(compose_attack):
    """``net@attacker_net=mlp`` against a CNN target: the student is the MLP, saved with its own network."""
    overrides = [*TINY_SYNTHETIC, "data.image_shape=[3,32,32]", "data.num_classes=5", *TINY_STEALING]
    cfg = compose_attack([*overrides, "model@target=cnn", "target.net.width=8", "net@attacker_net=mlp"])
    assert cfg.student.net._target_ == "privacy_attacks.models.MLP"
    metrics = run_attack(
        compose_attack(
            [*overrides, "model@target=cnn", "target.net.width=8", "net@attacker_net=mlp", "schedule.steps=5"]
        )
    )
    assert 0 <= metrics["student/agreement"] <= 1 and metrics["steps"] == 5
    saved = torch.load(Path(cfg.paths.output_dir) / "student.pt", weights_only=True)
    assert saved["net"]["_target_"] == "privacy_attacks.models.MLP" and saved["net"]["image_shape"] == [3, 32, 32]


def test_a_pool_of_another_shape_stops_before_any_work(compose_attack, monkeypatch):
    monkeypatch.setattr(pipelines, "provision_target", lambda cfg: pytest.fail("a target was provisioned"))
    overrides = [*TINY_SYNTHETIC, "data.image_shape=[3,32,32]", *TINY_STEALING, "model@target=cnn", "queries=mnist"]
    with pytest.raises(
        ConfigError, match=r"queries=mnist gives 1x28x28 images, but .*data=synthetic's 3x32x32"
    ) as error:
        run_attack(compose_attack(overrides))
    assert "\n" not in str(error.value)
    with pytest.raises(
        ConfigError, match=r"queries='cifar' is not one of the choices: mnist, fashion_mnist, noise, synth"
    ):
        run_attack(compose_attack([*overrides[:-1], "queries=cifar"]))


@pytest.mark.mnist
def test_a_pool_holding_the_evaluation_images_stops_before_any_work(compose_attack, monkeypatch):
    """MNIST's pool beside a target of some MNIST digits: the same files under another split, so the pool holds most
    of that data's validation split (its tuning set)."""
    monkeypatch.setattr(pipelines, "provision_target", lambda cfg: pytest.fail("a target was provisioned"))
    overrides = ["attack=distillation", "data=mnist_classes", "queries=mnist", "evaluation=tune"]
    with pytest.raises(
        ConfigError, match=r"queries=mnist is not allowed with data=mnist_classes: its pool holds \d+ of"
    ):
        run_attack(compose_attack(overrides))


def test_a_student_that_does_not_take_the_data_stops_before_any_work(compose_attack, monkeypatch):
    monkeypatch.setattr(pipelines, "provision_target", lambda cfg: pytest.fail("a target was provisioned"))
    overrides = [*TINY_SYNTHETIC, "data.image_shape=[3,32,32]", *TINY_STEALING, "model@target=cnn"]
    student = ["student.net={_target_: privacy_attacks.models.LeNet5, num_classes: 10}"]
    with pytest.raises(ConfigError, match=r"student.net \(LeNet5\) cannot take data=synthetic's images"):
        run_attack(compose_attack([*overrides, *student]))
    attacker_net = ["+attacker_net={_target_: privacy_attacks.models.LeNet5, num_classes: 10}"]  # the key one sets
    with pytest.raises(ConfigError, match=r"^attacker_net \(LeNet5\) cannot take data=synthetic's images"):
        run_attack(compose_attack([*overrides, *attacker_net]))


@pytest.mark.fashion_mnist
def test_stealing_a_fashion_mnist_lenet5(compose_attack):
    """Fashion-MNIST's LeNet5, stolen with its own pool and scored on its test images."""
    overrides = ["data=fashion_mnist", *TINY_STEALING, "target.members=500", "schedule.steps=10"]
    cfg = compose_attack(overrides)
    assert cfg.queries == "fashion_mnist" and cfg.student.net._target_.endswith("LeNet5")
    metrics = run_attack(cfg)
    assert metrics["queries/used"] == 100 and 0 <= metrics["student/agreement"] <= 1
    target = provision_target(cfg)
    assert target.spec["data"]["name"] == "fashion_mnist"
    assert metrics["target/test_acc"] == pytest.approx(target.metrics["test/acc"])


@pytest.mark.mnist
@pytest.mark.fashion_mnist
def test_mnist_digits_as_out_of_distribution_queries_for_fashion_mnist(compose_attack):
    overrides = ["data=fashion_mnist", *TINY_STEALING, "target.members=500", "schedule.steps=5", "queries=mnist"]
    metrics = run_attack(compose_attack(overrides))
    assert metrics["queries/used"] == 100 and 0 <= metrics["student/acc"] <= 1


def test_an_ensemble_student_trains_its_members_on_the_same_answers(compose_attack, monkeypatch):
    """``student.members=2``: two networks from their own initial weights, fitted on the very answers the single
    student gets (no extra query), saved as one ensemble that loads from ``student.pt``; the first member is the
    single student itself."""
    from privacy_attacks.attacks.stealing import StudentEnsemble, attack

    fits, real_fit = [], attack.fit_student

    def spy_fit(net, images, answers, *args, **kwargs):
        fits.append((images.clone(), answers.clone(), kwargs["seed"], kwargs["name"]))
        return real_fit(net, images, answers, *args, **kwargs)

    monkeypatch.setattr(attack, "fit_student", spy_fit)
    overrides = [*TINY_SYNTHETIC, "data.image_shape=[3,32,32]", "data.num_classes=5", *TINY_STEALING]
    overrides += ["model@target=cnn", "target.net.width=8", "schedule.steps=5"]
    single = run_attack(compose_attack(overrides))
    cfg = compose_attack([*overrides, "student.members=2"])
    metrics = run_attack(cfg)
    assert metrics["queries/used"] == 100 == single["queries/used"]
    assert metrics["student/first_member_agreement"] == single["student/agreement"]  # scored alone, as the single one
    assert 0 <= metrics["student/member_agreement"] <= 1 and 0 <= metrics["student/member_acc"] <= 1
    assert "student/member_agreement" not in single
    (images, answers, seed, name), *others = fits[1:]
    assert [name, *[o[3] for o in others]] == ["student 1/2", "student 2/2"] and fits[0][3] == "student"
    assert seed == fits[0][2] and others[0][2] != seed  # the first member is the single student's fit
    assert all(torch.equal(images, o[0]) and torch.equal(answers, o[1]) for o in others)
    saved = torch.load(Path(cfg.paths.output_dir) / "student.pt", weights_only=True)
    student = instantiate(OmegaConf.create(saved["net"]))
    assert isinstance(student, StudentEnsemble) and len(student.members) == 2
    student.load_state_dict(saved["state_dict"])
    assert student.eval()(torch.rand(2, 3, 32, 32)).shape == (2, 5)


@pytest.mark.parametrize(
    "override, message",
    [
        ("student.members=0", "student.members=0 is not allowed"),
        ("student.members=1.5", "student.members=1.5 is not allowed"),
        ("queries=generator query_budget=1792 student.members=2", "student.members must be 1 with queries=generator"),
    ],
)
def test_bad_ensemble_sizes_fail_before_any_work(compose_attack, monkeypatch, override, message):
    monkeypatch.setattr(pipelines, "provision_target", lambda cfg: pytest.fail("a target was provisioned"))
    with pytest.raises(ConfigError, match=message):
        run_attack(compose_attack(["attack=distillation", *override.split()]))


def test_ensemble_members_without_batch_norm_train_as_one(compose_attack, monkeypatch, caplog):
    """LeNet5 members are fitted as one vectorised model, each as it would be alone (its seeds, the same answers):
    the same ensemble, up to the order of floating-point sums, as when they are forced one by one."""
    from privacy_attacks.attacks.stealing import StudentEnsemble, attack

    cfg = compose_attack([*TINY_SYNTHETIC, *TINY_STEALING, "schedule.steps=8", "student.members=3"])
    assert cfg.student.net._target_ == "privacy_attacks.models.LeNet5"
    together = run_attack(cfg)
    saved = torch.load(Path(cfg.paths.output_dir) / "student.pt", weights_only=True)
    monkeypatch.setattr(attack, "students_refusal", lambda *args: "forced")
    with caplog.at_level("INFO"):
        alone = run_attack(cfg)
    assert "The 3 members of the student are trained one by one (forced)" in caplog.text
    again = torch.load(Path(cfg.paths.output_dir) / "student.pt", weights_only=True)
    for key, value in saved["state_dict"].items():
        assert torch.allclose(value, again["state_dict"][key], atol=1e-4), key
    assert together["student/agreement"] == pytest.approx(alone["student/agreement"], abs=0.02)
    assert isinstance(instantiate(OmegaConf.create(saved["net"])), StudentEnsemble)
