"""init=gradient_decoder: the last layer's features read off the gradient, the decoder, its cache and the runs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from privacy_attacks.attacks.gradient_inversion import attack as gradient_inversion
from privacy_attacks.attacks.gradient_inversion import last_layer
from privacy_attacks.attacks.gradient_inversion.attack import validate
from privacy_attacks.attacks.gradient_inversion.client import parameter_gradient
from privacy_attacks.engine.priors import GuessDistance
from privacy_attacks.errors import ConfigError
from privacy_attacks.models.lenet_sigmoid import LeNetSigmoid

from .test_attack import TINY_COLOUR

SMALL_DECODER = [
    "gradient_decoder.simulated_batches=200",
    "gradient_decoder.hidden=16",
    "gradient_decoder.epochs=1",
]


def test_the_class_features_are_exact_where_every_image_has_the_same_softmax():
    # Rows Σ_i (p_i − e_{y_i}) h_iᵀ with one softmax p for all images: each present class's mean features come back
    # exactly (read through the absent classes), whatever the fallback.
    source = torch.Generator().manual_seed(0)
    features, labels = torch.rand(6, 5, generator=source), torch.tensor([0, 0, 2, 3, 3, 3])
    p = torch.softmax(torch.randn(4, generator=source), 0).expand(6, 4)
    one_hot = F.one_hot(labels, 4).float()
    rows = (p - one_hot).T @ features
    counts = one_hot.sum(0)
    read = last_layer.class_features(rows, p.sum(0), counts, fallback=torch.full((5,), 9.0))
    for c in (0, 2, 3):
        assert torch.allclose(read[c], features[labels == c].mean(0), atol=1e-6)
    # Every class present: nothing to read the features' sum from, so the fallback (the mean feature) stands in.
    labels = torch.tensor([0, 1, 2, 3, 3, 3])
    one_hot = F.one_hot(labels, 4).float()
    rows = (p - one_hot).T @ features
    mean = features.mean(0)
    read = last_layer.class_features(rows, p.sum(0), one_hot.sum(0), fallback=mean)
    assert torch.allclose(read[3], features[3:].mean(0), atol=1e-6)  # S / B is the mean feature here: exact


def test_the_client_gradient_is_what_the_decoder_reads():
    # B · ∂L/∂W of the last layer is Σ_i (p_i − e_{y_i}) h_iᵀ and B · ∂L/∂b is Σ_i p_i − n, with h and p from the
    # forward hook: the quantities the decoder's training simulates are the client's own.
    torch.manual_seed(0)
    model = LeNetSigmoid().eval().requires_grad_(False)
    images, labels = torch.rand(4, 1, 28, 28), torch.tensor([1, 1, 7, 3])
    weight, bias = last_layer.last_linear(model, parameter_gradient(model, images, labels))
    features, p = last_layer.last_layer_inputs(model, images)
    one_hot = F.one_hot(labels, 10).float()
    assert features.shape == (4, 588)
    assert torch.allclose(4 * weight, (p - one_hot).T @ features, atol=1e-5)
    assert torch.allclose(4 * bias, (p - one_hot).sum(0), atol=1e-6)


def test_a_model_without_a_last_linear_layer_with_bias_is_refused():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3, bias=False))
    with pytest.raises(ConfigError, match="last nn.Linear with a bias"):
        last_layer.last_layer_inputs(model, torch.rand(2, 1, 2, 2))
    weight, bias = last_layer.last_linear(model, [torch.ones(3, 4)])  # labels are read without a bias
    assert weight.shape == (3, 4) and bias is None
    convolutional = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 2), torch.nn.Flatten())
    with pytest.raises(ConfigError, match="needs a shared model with an nn.Linear layer"):
        last_layer.last_linear(convolutional, [torch.ones(3, 1, 2, 2), torch.ones(3)])


def test_the_trained_decoder_beats_the_class_means_on_new_clients(compose_attack):
    # On clients the decoder never saw (another seed's draw of the attacker's images), its decoded images are nearer
    # the mean of each class's images in the batch than the attacker's mean image of the class (the class_mean start).
    from privacy_attacks.data.identity import attacker_training_set

    cfg = compose_attack([*TINY_COLOUR, "method=idlg", "batch_size=4", "init=gradient_decoder"])
    images, labels = attacker_training_set(cfg.data)
    model = gradient_inversion.shared_model(cfg, target=None)
    settings = {**cfg.gradient_decoder, "simulated_batches": 2000, "hidden": 32, "epochs": 2}
    decoder = last_layer.train_gradient_decoder(model, images, labels, 4, settings, seed=0)
    features, p = last_layer.last_layer_inputs(model, images)
    read, classes, fractions, truth = last_layer.simulated_clients(features, p, images, labels, 4, 300, seed=1)
    means = torch.stack([images[labels == k].mean(0) for k in range(5)])
    decoded = decoder(read, classes, fractions)
    assert decoded.shape == truth.shape == (len(classes), 3, 32, 32)
    assert F.mse_loss(decoded, truth) < 0.9 * F.mse_loss(means[classes], truth)


def test_the_decoder_is_trained_once_per_model_batch_size_and_seed(compose_attack, monkeypatch):
    base = [*TINY_COLOUR, "method=idlg", "init=gradient_decoder", *SMALL_DECODER]
    cfg = compose_attack([*base, "batch_size=4"])
    model = gradient_inversion.shared_model(cfg, target=None)
    from privacy_attacks.data.identity import attacker_training_set as real_training_set

    loads = []
    monkeypatch.setattr(
        gradient_inversion, "attacker_training_set", lambda data: loads.append(1) or real_training_set(data)
    )

    first = gradient_inversion.start_guesses(cfg, model)
    second = gradient_inversion.start_guesses(cfg, model)  # from the cache: no image loaded
    assert len(loads) == 1
    gradient = parameter_gradient(model, torch.rand(4, 3, 32, 32), torch.tensor([0, 0, 2, 4]))
    labels = torch.tensor([0, 0, 2, 4])
    guess = first(gradient, labels)
    assert guess.shape == (4, 3, 32, 32) and guess.min() >= 0 and guess.max() <= 1
    assert torch.equal(guess, second(gradient, labels))
    assert torch.equal(guess[0], guess[1])  # one decoded image per class: both 0s start there
    for other in (["batch_size=2"], ["batch_size=4", "seed=1"], ["batch_size=4", "private_seed=1"]):
        changed = compose_attack([*base, *other])  # another batch size, attacker seed, shared model
        gradient_inversion.start_guesses(changed, gradient_inversion.shared_model(changed, target=None))
    assert len(loads) == 4  # each of the three trained its own


def test_the_decoded_start_is_where_every_restart_begins_and_the_anchor_pulls(compose_attack, monkeypatch):
    from privacy_attacks.pipelines import run_attack

    starts, nodes, real_fit, real_build = [], [], gradient_inversion.fit_reconstruction, gradient_inversion.build_module

    def spy_fit(module, *args, **kwargs):
        starts.append(module.images.detach().clone())
        return real_fit(module, *args, **kwargs)

    def spy_build(*args, **kwargs):
        module = real_build(*args, **kwargs)
        nodes.append(module)
        return module

    monkeypatch.setattr(gradient_inversion, "fit_reconstruction", spy_fit)
    monkeypatch.setattr(gradient_inversion, "build_module", spy_build)
    decoded = []
    real_guesses = gradient_inversion.start_guesses

    def spy_guesses(cfg, model):
        decode = real_guesses(cfg, model)
        return lambda gradient, labels: decoded.append(decode(gradient, labels)) or decoded[-1]

    monkeypatch.setattr(gradient_inversion, "start_guesses", spy_guesses)
    job = [*TINY_COLOUR, "method=idlg", "batch_size=2", "num_batches=2", "steps=2", "init=gradient_decoder"]
    metrics = run_attack(compose_attack([*job, *SMALL_DECODER, "gradient_decoder.anchor=0.5", "restarts=2"]))
    assert "recon/psnr" in metrics and len(decoded) == 2  # one decoded start per client
    assert len(starts) == 4  # two clients, two separate restarts each, each from its client's decoded images
    for client in range(2):
        for start in starts[2 * client : 2 * client + 2]:
            assert torch.allclose(start, decoded[client].clamp(0, 1))
    anchors = [prior for module in nodes for prior in module.modules() if isinstance(prior, GuessDistance)]
    pulled = [prior for prior in anchors if float(prior.weight) == 0.5]
    assert len(pulled) == 4  # every restart's pass is pulled towards its client's decoded images
    for client in range(2):
        for prior in pulled[2 * client : 2 * client + 2]:
            assert torch.allclose(prior.guess, decoded[client])


def test_a_gradient_decoder_init_that_cannot_work_is_refused_before_any_work(compose_attack):
    with pytest.raises(ConfigError, match="method=dlg optimises soft labels"):
        validate(compose_attack(["attack=gradient_inversion", "method=dlg", "init=gradient_decoder"]))
    with pytest.raises(ConfigError, match="both choose the start"):
        validate(compose_attack(["attack=gradient_inversion", "method=idlg", "init=gradient_decoder", "prior=gan"]))
    for bad in ("gradient_decoder.hidden=0", "gradient_decoder.lr=0", "gradient_decoder.anchor=-1"):
        with pytest.raises(ConfigError, match="gradient_decoder"):
            validate(compose_attack(["attack=gradient_inversion", "method=idlg", "init=gradient_decoder", bad]))
    validate(compose_attack(["attack=gradient_inversion", "method=imprint", "init=gradient_decoder"]))


def _client(images, labels, model):
    weight, bias = last_layer.last_linear(model, parameter_gradient(model, images, labels))
    features, _ = last_layer.last_layer_inputs(model, images)
    return last_layer.read_class_features(weight, bias, labels, len(labels), features.mean(0)).float()


def test_feature_fit_recovers_a_lone_image_and_pulls_a_repeated_class_apart():
    # A class alone in the batch: its image's own features are read off the gradient, and fitting them from a far
    # start brings the image much nearer (192 features of 256 pixels here: not all the way). A repeated class: its
    # images start at one image plus noise and end apart, their summed features at the class's.
    torch.manual_seed(0)
    model = LeNetSigmoid(image_size=16).eval().requires_grad_(False)
    images, labels = torch.rand(3, 1, 16, 16), torch.tensor([1, 2, 2])
    read = _client(images, labels, model)
    start = torch.full_like(images, 0.5)
    settings = {"steps": 200, "tv_alone": 0.0, "tv_repeated": 0.0, "noise": 0.1}
    fitted = last_layer.fit_class_features(model, start, labels, read, settings, seed=0)
    assert fitted.shape == images.shape and fitted.min() >= 0 and fitted.max() <= 1
    assert F.mse_loss(fitted[0], images[0]) < 0.5 * F.mse_loss(start[0], images[0])
    features, _ = last_layer.last_layer_inputs(model, fitted)
    before, _ = last_layer.last_layer_inputs(model, start)
    assert (features[0] - read[1]).norm() < 0.1 * (before[0] - read[1]).norm()
    assert (features[1:].sum(0) - 2 * read[2]).norm() < 0.1 * (before[1:].sum(0) - 2 * read[2]).norm()
    assert not torch.allclose(fitted[1], fitted[2], atol=1e-3)
    # The noise is the attacker's: the same seed gives the same images, another seed other repeated ones.
    assert torch.equal(fitted, last_layer.fit_class_features(model, start, labels, read, settings, seed=0))
    other = last_layer.fit_class_features(model, start, labels, read, settings, seed=1)
    assert not torch.allclose(other[1:], fitted[1:])
    unchanged = last_layer.fit_class_features(model, start, labels, read, {**settings, "steps": 0, "noise": 0}, 0)
    assert torch.equal(unchanged, start)


def test_feature_fit_finishes_every_client_of_a_run(compose_attack, monkeypatch):
    from privacy_attacks.engine.metrics import image_similarity
    from privacy_attacks.io import output_dir
    from privacy_attacks.pipelines import run_attack

    finished, real_fit = [], last_layer.fit_class_features

    def spy_fit(model, images, labels, read, settings, seed):
        fitted = real_fit(model, images, labels, read, settings, seed)
        finished.append((images, labels, fitted))
        return fitted

    monkeypatch.setattr(gradient_inversion, "fit_class_features", spy_fit)
    job = [*TINY_COLOUR, "method=idlg", "batch_size=2", "num_batches=2", "steps=2", "feature_fit.steps=5"]
    cfg = compose_attack(job)
    metrics = run_attack(cfg)
    assert "recon/psnr" in metrics and len(finished) == 2  # once per client, on its best restart
    saved = torch.load(output_dir(cfg) / "reconstructions.pt")
    psnr = image_similarity(saved["images"], saved["originals"])["psnr"]
    alone = gradient_inversion.alone_in_batch(saved["original_labels"], 2)
    for key, chosen in (("recon/psnr_alone", alone), ("recon/psnr_repeated", ~alone)):  # the split of recon/psnr
        assert metrics.get(key) == (pytest.approx(psnr[chosen].mean().item()) if chosen.any() else None)
    for images, labels, fitted in finished:
        assert images.shape == fitted.shape == (2, 3, 32, 32) and labels.shape == (2,)
        assert not torch.equal(images, fitted)


def test_a_feature_fit_that_cannot_work_is_refused_before_any_work(compose_attack):
    for method in ("dlg", "imprint"):
        with pytest.raises(ConfigError, match="does not recover labels by class"):
            validate(compose_attack(["attack=gradient_inversion", f"method={method}", "feature_fit.steps=10"]))
    for bad in ("steps=-1", "tv_alone=-1", "tv_repeated=-1", "noise=-0.1"):
        with pytest.raises(ConfigError, match="feature_fit"):
            validate(compose_attack(["attack=gradient_inversion", "method=idlg", f"feature_fit.{bad}"]))
    validate(compose_attack(["attack=gradient_inversion", "method=imprint", "feature_fit.steps=0"]))


def test_simulated_clients_built_chunk_by_chunk_are_the_clients_built_at_once():
    torch.manual_seed(0)
    features, images = torch.rand(50, 6), torch.rand(50, 1, 4, 4)
    probabilities, labels = torch.softmax(torch.randn(50, 3), dim=1), torch.randint(0, 3, (50,))
    at_once = last_layer.simulated_clients(features, probabilities, images, labels, 4, 23, seed=1, chunk=23)
    chunked = last_layer.simulated_clients(features, probabilities, images, labels, 4, 23, seed=1, chunk=5)
    assert all(torch.equal(a, b) for a, b in zip(at_once, chunked, strict=True))
    read, classes, fractions, means = chunked
    assert read.shape == (len(classes), 6) and means.shape == (len(classes), 1, 4, 4)
    assert ((fractions > 0) & (fractions <= 1)).all()
