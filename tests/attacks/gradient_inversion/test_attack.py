"""Gradient inversion (DLG, iDLG, IG) end to end: restarts, config, bad input, runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from privacy_attacks.attacks.gradient_inversion import attack as gradient_inversion
from privacy_attacks.attacks.gradient_inversion.attack import validate
from privacy_attacks.engine.metrics import image_similarity
from privacy_attacks.errors import ConfigError
from privacy_attacks.models.lenet_sigmoid import LeNetSigmoid
from tests.conftest import SMALL_TARGET, run_script


def _model(seed: int = 0) -> LeNetSigmoid:
    torch.manual_seed(seed)
    return LeNetSigmoid().eval().requires_grad_(False)


def _pairs(images, labels) -> set[tuple[bytes, int]]:
    return {(image.numpy().tobytes(), int(label)) for image, label in zip(images, labels)}


def _spy_on_fits(monkeypatch) -> list:
    """The engine modules the attack fits, in order (the fits run as they would)."""
    modules, real_fit = [], gradient_inversion.fit_reconstruction

    def spy_fit(module, *args, **kwargs):
        modules.append(module)
        return real_fit(module, *args, **kwargs)

    monkeypatch.setattr(gradient_inversion, "fit_reconstruction", spy_fit)
    return modules


def test_a_client_keeps_the_restart_with_the_lowest_matching_loss_not_the_one_nearest_the_truth(
    compose_attack, monkeypatch
):
    # Three planted restarts of DLG (each with its own soft labels) in place of the fit: restart 0 is the client's
    # batch itself but has the highest loss; restart 2 holds the lowest loss of any single image; restart 1 has the
    # lowest loss as a batch. The client must return restart 1's images and labels, whole: not the truth (a choice
    # by distance to it), not restart 2 (by one image's loss), not a mix of restarts (per image), not restart 0
    # (the first) or 2 (the last).
    overrides = ["method=dlg", "batch_size=2", "steps=1", "restarts=3", "separate_restarts=false"]
    cfg = compose_attack(["attack=gradient_inversion", *overrides])
    images, labels = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(0)), torch.tensor([4, 1])
    noise = torch.rand(2, 2, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    planted = torch.stack([images, noise[0], noise[1]])  # (R, B, 1, 28, 28)
    losses = torch.tensor([[3.0, 3.0], [1.0, 1.0], [0.2, 4.0]])  # (R, B)
    planted_labels = torch.tensor([[4, 1], [7, 3], [9, 8]])  # argmax of each restart's soft labels

    def planted_fit(module, trainer, logger=False):
        module.best_images.copy_(planted.flatten(0, 1))
        module.best_loss.copy_(losses.flatten())
        module.objective.soft_labels.data.copy_(torch.nn.functional.one_hot(planted_labels, 10).float() * 5)
        return module

    monkeypatch.setattr(gradient_inversion, "fit_reconstruction", planted_fit)
    result = gradient_inversion.attack_batch(cfg, _model(), images, labels, seed=0)
    assert _pairs(result.images, result.labels) == _pairs(noise[0], planted_labels[1])


def test_a_clients_restarts_differ_and_it_returns_one_of_them_whole(compose_attack, monkeypatch):
    cfg = compose_attack(["attack=gradient_inversion", "method=ig", "batch_size=2", "steps=5", "restarts=3"])
    modules = _spy_on_fits(monkeypatch)
    model, images, labels = _model(), torch.rand(2, 1, 28, 28), torch.tensor([4, 1])
    result = gradient_inversion.attack_batch(cfg, model, images, labels, seed=0)
    candidates, _ = modules[0].all_reconstructions()  # (R, B, ...)
    assert not torch.equal(candidates[0], candidates[1]) and not torch.equal(candidates[1], candidates[2])
    returned = {image.numpy().tobytes() for image in result.images}
    assert sum(returned == {image.numpy().tobytes() for image in restart} for restart in candidates) == 1


def test_separate_restarts_are_problems_of_their_own_and_the_first_is_the_single_restart_job(
    compose_attack, monkeypatch
):
    # L-BFGS methods optimise each restart alone (its own optimiser, history and step): three restarts are three
    # single-restart fits; restart 0 is bit for bit what restarts=1 gives, the others start elsewhere; the client
    # keeps the restart of the lowest gradient distance, whole.
    modules = _spy_on_fits(monkeypatch)
    model, images, labels = _model(), torch.rand(2, 1, 28, 28), torch.tensor([4, 1])
    base = ["attack=gradient_inversion", "method=dlg", "batch_size=2", "steps=4"]
    single = gradient_inversion.attack_batch(compose_attack([*base, "restarts=1"]), model, images, labels, seed=3)
    assert len(modules) == 1
    cfg = compose_attack([*base, "restarts=3"])
    assert cfg.separate_restarts is True
    three = gradient_inversion.fit_restarts(cfg, model, *_client_gradient(model, images, labels), seed=3)
    assert len(modules) == 4 and all(m.hparams.restarts == 1 for m in modules[1:])
    candidates, losses, predicted = three
    assert candidates.shape == (3, 2, 1, 28, 28) and losses.shape == (3, 2) and predicted.shape == (3, 2)
    assert torch.equal(modules[1].all_reconstructions()[0][0], modules[0].all_reconstructions()[0][0])
    assert not torch.equal(candidates[0], candidates[1]) and not torch.equal(candidates[1], candidates[2])
    result = gradient_inversion.attack_batch(cfg, model, images, labels, seed=3)
    best = int(losses.sum(dim=1).argmin())
    assert _pairs(result.images, result.labels) == _pairs(candidates[best], predicted[best])
    if best == 0:
        assert _pairs(result.images, result.labels) == _pairs(single.images, single.labels)


def test_registration_pairs_each_restart_with_the_best_within_labels():
    # Restart 1 (the best: lowest summed loss) holds images a, b, c with labels 3, 3, 5; restart 0 holds near copies
    # of them in another order. Registration reorders restart 0 to the best's slots, never pairing two labels (its
    # image nearest to c has label 3 and must stay apart from c's slot).
    a, b, c = torch.zeros(1, 4, 4), torch.ones(1, 4, 4), torch.full((1, 4, 4), 0.5)
    candidates = torch.stack([torch.stack([b + 0.01, c + 0.2, a + 0.01]), torch.stack([a, b, c])])
    labels = torch.tensor([[3, 5, 3], [3, 3, 5]])
    losses = torch.tensor([[1.0, 2.0, 3.0], [0.1, 0.1, 0.1]])
    registered, registered_losses, registered_labels = gradient_inversion.register_restarts(candidates, losses, labels)
    assert torch.equal(registered[1], candidates[1]) and torch.equal(registered_labels, torch.tensor([[3, 3, 5]] * 2))
    assert torch.equal(registered[0], torch.stack([a + 0.01, b + 0.01, c + 0.2]))
    assert torch.equal(registered_losses[0], torch.tensor([3.0, 1.0, 2.0]))


def test_group_consistency_refits_every_restart_from_where_it_stands_towards_the_consensus(compose_attack, monkeypatch):
    modules = _spy_on_fits(monkeypatch)
    model, images, labels = _model(), torch.rand(2, 1, 28, 28), torch.tensor([4, 1])
    base = ["attack=gradient_inversion", "method=idlg", "batch_size=2", "steps=3", "restarts=3"]
    cfg = compose_attack([*base, "group_consistency=0.01", "group_rounds=2"])
    gradient, _ = _client_gradient(model, images, labels)
    candidates, losses, predicted = gradient_inversion.fit_restarts(cfg, model, gradient, labels, seed=1)
    assert len(modules) == 9 and candidates.shape == (3, 2, 1, 28, 28)  # 3 separate restarts x (1 + 2 rounds)
    assert "group" not in modules[0].priors  # the first pass has no consensus yet: the prior is off
    first = torch.stack([m.all_reconstructions()[0][0] for m in modules[:3]])
    consensus = gradient_inversion.register_restarts(first, *(torch.stack(x) for x in _losses_labels(modules[:3])))
    refit = modules[3]
    assert refit.priors["group"].active and refit.priors["group"].weight == 0.01
    assert torch.equal(refit.priors["group"].guess, consensus[0].mean(dim=0))
    off = compose_attack([*base, "group_consistency=0.0", "group_rounds=2"])
    gradient_inversion.fit_restarts(off, model, gradient, labels, seed=1)
    assert len(modules) == 12  # off: one pass
    with pytest.raises(ConfigError, match="optimises soft labels"):
        validate(compose_attack(["attack=gradient_inversion", "method=dlg", "group_consistency=0.01"]))


def _losses_labels(modules):
    """Each module's per-image losses (B,) and labels (B,) of its single restart."""
    parts = [(m.all_reconstructions()[1][0], m.objective.predicted_labels().view(-1)) for m in modules]
    return [p[0] for p in parts], [p[1] for p in parts]


def _client_gradient(model, images, labels):
    """The shared gradient of a client holding ``images``/``labels`` and DLG's recovered labels (None)."""
    _, gradient = gradient_inversion.SimulatedClient(model, images, labels).gradients()
    return gradient, None


@pytest.mark.mnist
def test_bias_counts_read_the_models_mean_output_on_the_attackers_images_only_where_they_count(compose_attack):
    cfg = compose_attack(["attack=gradient_inversion", "method=idlg", "batch_size=4", "label_public_images=50"])
    model = _model()
    mean = gradient_inversion.public_mean_probabilities(cfg, model)
    public = gradient_inversion.attacker_training_images(cfg.data)[:50].float()
    assert torch.allclose(mean, model(public).softmax(dim=-1).mean(dim=0), atol=1e-6)
    assert float(mean.sum()) == pytest.approx(1.0, abs=1e-5)
    for overrides in (["batch_size=1"], ["label_recovery=row_signs"], ["method=dlg", "batch_size=4"]):
        other = compose_attack(["attack=gradient_inversion", "method=idlg", *overrides])
        assert gradient_inversion.public_mean_probabilities(other, model) is None


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
        (["separate_restarts=maybe"], "separate_restarts"),
        (["label_recovery=guess"], "bias_counts, row_signs"),
        (["label_public_images=0"], "label_public_images"),
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
        assert metrics["recon/psnr_alone"] == metrics["recon/psnr"] and "recon/psnr_repeated" not in metrics  # batch 1
        assert saved["images"].shape == (1, 1, 28, 28) and 0 <= saved["images"].min() <= saved["images"].max() <= 1
        assert (sweep / job / "reconstructions.png").exists()
    assert (sweep / "summary.csv").exists() and (sweep / "quality.png").exists()
    assert "recon/psnr" in result.stdout


def test_the_images_alone_in_their_class_are_told_from_the_repeated_ones_batch_by_batch():
    labels = torch.tensor([3, 1, 3, 0, 2, 2, 2, 3])  # two clients of 4: {3, 1, 3, 0} and {2, 2, 2, 3}
    alone = gradient_inversion.alone_in_batch(labels, 4)
    assert alone.tolist() == [False, True, False, True, False, False, False, True]  # the second client's 3 is alone


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


def test_the_gradient_cosine_is_one_undefended_and_drops_with_pruning():
    from privacy_attacks.defenses import GradientPrune

    torch.manual_seed(0)
    raw = [torch.randn(5, 3), torch.randn(7)]
    assert gradient_inversion.gradient_cosine(raw, raw) == pytest.approx(1.0)
    pruned = GradientPrune(0.9)(raw)
    assert 0.0 < gradient_inversion.gradient_cosine(raw, pruned) < 1.0
    flat = torch.cat([g.flatten() for g in raw])
    kept = torch.cat([g.flatten() for g in pruned])
    assert gradient_inversion.gradient_cosine(raw, pruned) == pytest.approx(
        float(flat @ kept / (flat.norm() * kept.norm())), rel=1e-5
    )


# Synthetic colour images of 5 classes: 400 training images (40 for validation), 60 test images, a small VGG-style
# target (provisioned with every attack; the shared model here is DLG's sigmoid LeNet, built for 3x32x32).
TINY_COLOUR = [
    "attack=gradient_inversion",
    "data=synthetic",
    "data.image_shape=[3,32,32]",
    "data.num_classes=5",
    "data.source.train_size=400",
    "data.source.test_size=60",
    "data.val_size=40",
    "model@target=cnn",
    "target.net.width=8",
    "target.members=100",
    "target.max_epochs=1",
    "private_pool=20",
]


@pytest.mark.parametrize("private_set", ["report", "tune"])
def test_idlg_runs_on_colour_images_from_the_datas_private_sets(compose_attack, private_set):
    """The clients hold the data's test images (report) or its validation images (tune), 3x32x32 of 5 classes; the
    shared model is built for them and iDLG recovers every label among the 5."""
    from privacy_attacks.data.identity import data_source
    from privacy_attacks.data.private import private_pool
    from privacy_attacks.data.tensors import split_indices
    from privacy_attacks.io import output_dir
    from privacy_attacks.pipelines import run_attack

    overrides = ["method=idlg", "batch_size=1", "num_batches=2", "steps=20", f"private_set={private_set}"]
    cfg = compose_attack([*TINY_COLOUR, *overrides])
    model = gradient_inversion.shared_model(cfg, target=None)
    assert model.conv1[0].in_channels == 3 and model(torch.zeros(1, 3, 32, 32)).shape == (1, 5)
    metrics = run_attack(cfg)
    assert metrics["recon/label_acc"] == 1.0 and 0.0 <= metrics["recon/ssim"] <= 1.0
    saved = torch.load(output_dir(cfg) / "reconstructions.pt")
    assert saved["images"].shape == saved["originals"].shape == (2, 3, 32, 32)
    assert 0.0 <= float(saved["images"].min()) and float(saved["images"].max()) <= 1.0
    data = data_source(cfg.data).load()
    if private_set == "report":
        candidates, labels = data.test_images, data.test_labels
    else:
        index = split_indices(40, cfg.data.split_seed, None, 400)["val"]
        candidates, labels = data.train_images[index], data.train_labels[index]
    assert _pairs(saved["originals"], saved["original_labels"]) <= _pairs(candidates, labels)
    pool, pool_labels = private_pool(cfg)
    assert torch.equal(saved["originals"], pool[:2]) and torch.equal(saved["original_labels"], pool_labels[:2])


def test_dlg_with_restarts_reconstructs_colour_batches_of_the_datas_shape(compose_attack):
    cfg = compose_attack([*TINY_COLOUR, "method=dlg", "batch_size=2", "steps=3", "restarts=2"])
    model = gradient_inversion.shared_model(cfg, target=None)
    images, labels = torch.rand(2, 3, 32, 32), torch.tensor([4, 1])
    result = gradient_inversion.attack_batch(cfg, model, images, labels, seed=0)
    assert result.images.shape == (2, 3, 32, 32) and int(result.labels.max()) < 5


def test_a_shared_model_that_cannot_take_the_data_is_refused_in_one_line(compose_attack, monkeypatch):
    from privacy_attacks import pipelines

    monkeypatch.setattr(pipelines, "provision_target", lambda cfg: pytest.fail("a target was provisioned"))
    colour = [key for key in TINY_COLOUR if not key.startswith(("model@target", "target.net"))]
    overrides = [*colour, "model@target=lenet5", "shared_model=target", "model_state=trained"]
    overrides.append("target.net.image_shape=[1,28,28]")  # a LeNet5 built for MNIST's images only
    with pytest.raises(ConfigError, match=r"target.net \(LeNet5\)") as error:
        pipelines.run_attack(compose_attack(overrides))
    assert "\n" not in str(error.value)


def test_no_target_is_trained_unless_the_clients_share_it(compose_attack, monkeypatch):
    from privacy_attacks import pipelines

    def provisioned(cfg):
        raise AssertionError("a target was provisioned")

    monkeypatch.setattr(gradient_inversion, "provision_target", provisioned)
    overrides = [*TINY_COLOUR, "method=idlg", "batch_size=1", "num_batches=1", "steps=2"]
    cfg = compose_attack([*overrides, "logger=tensorboard"])
    metrics = pipelines.run_attack(cfg)  # DLG's own sigmoid LeNet: no target needed
    assert "target/test_acc" not in metrics and "recon/psnr" in metrics
    (events,) = Path(cfg.paths.output_dir).rglob("events.out.tfevents.*")
    accumulator = EventAccumulator(str(events))
    accumulator.Reload()
    start = accumulator.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(start).session_start_info.hparams
    assert "shared_model" in hparams and not any(key.startswith("target.") for key in hparams)  # none was attacked
    with pytest.raises(AssertionError, match="a target was provisioned"):
        pipelines.run_attack(compose_attack([*overrides, "shared_model=target", "model_state=trained"]))


def test_the_mean_image_init_reads_the_configured_data_without_the_private_images(compose_attack):
    from hydra.utils import instantiate

    from privacy_attacks.data.identity import attacker_training_images, data_source
    from privacy_attacks.data.tensors import split_indices

    cfg = compose_attack([*TINY_COLOUR, "init=mean"])
    init = instantiate(cfg.inits[cfg.init], noise=0.0)
    pool = attacker_training_images(cfg.data)
    mean = pool.float().mean(dim=0)
    assert torch.equal(init((2, 3, 32, 32), torch.Generator()), mean.expand(2, 3, 32, 32).clamp(0, 1))
    # The validation split (private_set=tune's private images) is not in the average.
    train_images = data_source(cfg.data).load().train_images
    validation = split_indices(cfg.data.val_size, cfg.data.split_seed, None, len(train_images))["val"]
    assert len(pool) == len(train_images) - len(validation)
    assert not torch.allclose(mean, train_images.float().mean(dim=0))


@pytest.mark.fashion_mnist
def test_idlg_runs_on_fashion_mnist(compose_attack):
    from privacy_attacks.pipelines import run_attack

    overrides = ["attack=gradient_inversion", "data=fashion_mnist", "data.val_size=1000", "target.members=500"]
    cfg = compose_attack([*overrides, "method=idlg", "batch_size=1", "num_batches=2", "steps=20"])
    metrics = run_attack(cfg)
    assert metrics["recon/label_acc"] == 1.0 and 0.0 <= metrics["recon/ssim"] <= 1.0


TINY_GAN = ["prior=gan", "gan.steps=3", "gan.width=4", "gan.latent_dim=8", "gan.batch_size=8", "gan.search_steps=3"]


def test_the_generative_prior_searches_codes_first_and_the_pixels_start_from_its_best_images(
    compose_attack, monkeypatch
):
    """prior=gan: a class-conditional generator trained on the attacker's own labelled images (cached: trained once
    per seed), then one search over ``gan.search_restarts`` batches of codes for the recovered labels, and the
    method's pixel optimisation from the best of them; ``gan.refine=false`` keeps the generator's images."""
    from privacy_attacks.attacks.inversion import gan
    from privacy_attacks.data.identity import attacker_training_set
    from privacy_attacks.pipelines import run_attack

    trained, real_train = [], gan.ConditionalGANTraining.training_step

    def spy_step(self, batch, batch_idx):
        trained.append(batch)
        return real_train(self, batch, batch_idx)

    monkeypatch.setattr(gan.ConditionalGANTraining, "training_step", spy_step)
    modules, starts, real_build = _spy_on_fits(monkeypatch), [], gradient_inversion.build_module

    def spy_build(*args, **kwargs):
        starts.append(args[6] if len(args) > 6 else kwargs.get("start"))
        return real_build(*args, **kwargs)

    monkeypatch.setattr(gradient_inversion, "build_module", spy_build)
    base = [*TINY_COLOUR, "method=ig_lbfgs", "batch_size=2", "num_batches=1", "steps=3", *TINY_GAN]
    cfg = compose_attack([*base, "gan.search_restarts=3"])
    validate(cfg)
    metrics = run_attack(cfg)
    assert len(trained) == 3 and 0.0 <= metrics["recon/ssim"] <= 1.0
    public, public_labels = attacker_training_set(cfg.data)
    for images, labels in trained:  # the attacker's own images with their own labels, never a private one
        assert _pairs(images, labels) <= _pairs(public, public_labels)
    search, refine = modules
    assert search.parameterisation is not None and search.hparams.restarts == 3 and search.hparams.steps == 3
    assert not search.priors  # the generator is the prior
    assert refine.parameterisation is None and refine.hparams.restarts == 1
    searched, losses = search.all_reconstructions()
    best = int(losses.sum(dim=1).argmin())
    assert starts[0] is None and torch.equal(starts[1].cpu(), searched[best])  # from the best searched batch
    assert "anchor" not in refine.priors  # gan.anchor 0: off
    anchored = compose_attack([*base, "gan.search_restarts=3", "gan.anchor=0.5"])
    run_attack(anchored)
    prior = modules[-1].priors["anchor"]  # the pixels pulled towards the generator's images they start from
    assert prior.weight == 0.5 and torch.equal(prior.guess.cpu(), starts[-1].cpu())
    run_attack(compose_attack([*base, "gan.refine=[]"]))
    assert len(trained) == 3 and len(modules) == 5  # the generator came from the cache; the search alone
    run_attack(compose_attack([*base, "gan.refine=[generator,pixels]", "gan.generator_steps=2"]))
    search, tuned, pixels = modules[5:]
    copies = tuned.parameterisation.copies  # GIAS: each image its own generator, from the searched code
    assert len(copies) == 2 and all(p.requires_grad for p in copies.parameters())
    tuned.train()  # as a fit starts: the copies' batch norms keep the trained statistics
    assert not any(m.training for m in copies.modules())
    losses = search.all_reconstructions()[1]  # the codes of the best searched batch, where the search ended
    best_codes = search.latents.detach().view(len(losses), 2, -1)[int(losses.sum(dim=1).argmin())]
    assert torch.equal(tuned.parameterisation.initial_codes, best_codes)
    assert not torch.equal(copies[0].body.project.weight, copies[1].body.project.weight)  # tuned apart
    assert torch.equal(starts[-1].cpu(), tuned.all_reconstructions()[0][0])  # the pixels start from its images


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["method=dlg"], "method=dlg recovers no label"),
        (["method=imprint"], "method=imprint optimises nothing"),
        (["method=idlg", "restarts=4", "gan.search_restarts=2"], "at least restarts=4"),
        (["method=idlg", "gan.search_steps=0"], "gan.search_steps"),
        (["method=idlg", "gan.search_lr=0"], "gan.search_lr"),
        (["method=idlg", "prior=vae"], "pixels, gan"),
        (["method=idlg", "gan.refine=[weights]"], "generator, pixels"),
        (["method=idlg", "gan.generator_lr=-1"], "gan.generator_lr"),
    ],
)
def test_a_generative_prior_that_cannot_work_is_refused_before_any_work(compose_attack, overrides, message):
    with pytest.raises(ConfigError, match=message):
        validate(compose_attack(["attack=gradient_inversion", "prior=gan", *overrides]))


def test_the_class_mean_init_starts_each_image_at_the_attackers_mean_of_its_recovered_label(
    compose_attack, monkeypatch
):
    # The start of every restart is, image by image, the mean of the attacker's own images (the training pool
    # outside the validation split: no private image of either set) of that image's recovered label.
    from privacy_attacks.data.identity import attacker_training_set

    starts, real_fit = [], gradient_inversion.fit_reconstruction

    def spy_fit(module, *args, **kwargs):
        starts.append(module.images.detach().clone().view(-1, 2, 3, 32, 32))
        return real_fit(module, *args, **kwargs)

    monkeypatch.setattr(gradient_inversion, "fit_reconstruction", spy_fit)
    cfg = compose_attack([*TINY_COLOUR, "method=idlg", "batch_size=2", "steps=2", "init=class_mean", "restarts=2"])
    validate(cfg)
    own, own_labels = attacker_training_set(cfg.data)
    means = gradient_inversion.attacker_class_means(cfg)
    assert means.shape == (5, 3, 32, 32)
    for k in range(5):
        assert torch.allclose(means[k], own[own_labels == k].mean(dim=0))
    model = gradient_inversion.shared_model(cfg, target=None)
    images, labels = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)), torch.tensor([4, 1])
    gradient, _ = _client_gradient(model, images, labels)
    gradient_inversion.fit_restarts(cfg, model, gradient, labels, seed=0, guess=means[labels])
    assert len(starts) == 2  # separate restarts: two problems, each from the class means (noise 0 by default)
    for start in starts:
        assert torch.allclose(start[0], means[labels].clamp(0, 1))
    # End to end: the job computes the means once, and every client starts from them.
    from privacy_attacks.pipelines import run_attack

    calls, real_means = [], gradient_inversion.attacker_class_means
    monkeypatch.setattr(gradient_inversion, "attacker_class_means", lambda cfg: calls.append(1) or real_means(cfg))
    starts.clear()
    job = compose_attack([*TINY_COLOUR, "method=idlg", "batch_size=2", "num_batches=2", "steps=2", "init=class_mean"])
    assert "recon/psnr" in run_attack(job) and len(calls) == 1 and len(starts) == 2


def test_a_class_mean_init_that_cannot_work_is_refused_before_any_work(compose_attack):
    with pytest.raises(ConfigError, match="method=dlg optimises soft labels"):
        validate(compose_attack(["attack=gradient_inversion", "method=dlg", "init=class_mean"]))
    with pytest.raises(ConfigError, match="both choose the start"):
        validate(compose_attack(["attack=gradient_inversion", "method=idlg", "init=class_mean", "prior=gan"]))
    validate(compose_attack(["attack=gradient_inversion", "method=imprint", "init=class_mean"]))  # nothing to start
