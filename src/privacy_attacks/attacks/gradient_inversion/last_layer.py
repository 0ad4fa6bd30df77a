"""A learned start for gradient inversion from the last layer's gradient (``init=gradient_decoder``).

For a shared model ending in a linear layer z = W h + b and the batch's mean cross-entropy, the client's gradient
of that layer is B · ∂L/∂W = Σ_i (p_i − e_{y_i}) h_iᵀ and B · ∂L/∂b = Σ_i p_i − n (p_i the softmax of image i,
n the label counts). Row c of the first is Σ_i p_ic h_i − T_c, T_c = Σ_{i: y_i = c} h_i the summed features of the
batch's images of class c. With q_c = Σ_i p_ic (known exactly from the bias gradient and the recovered counts) and
p_ic ≈ q_c / B (an untrained network's outputs vary little between inputs), a class c' absent from the batch has
row q_c' / B · S with S = Σ_i h_i, so T_c ≈ q_c · row_c' / q_c' − row_c: the mean last-layer features of each
class's images, read off the gradient (as the fully connected layer leaks its input: Phong et al. 2017, Geng et al.
2021 for the label counts). A **decoder** trained on the attacker's own images (simulated clients of the same batch
size on the same shared model; Wu et al. 2023, "Learning to Invert", train such a map from gradients to images on
auxiliary data) maps those features to the mean image of the class's images in the batch; each image starts at its
recovered label's decoded image, and the method's gradient matching goes on from there.

The decoder is a ridge regression from the standardised features (and the class, its count) to the pixels, plus a
multilayer perceptron on the same input fitted to what the regression leaves (its last layer starts at zero).

The same features also **finish** a reconstruction (``feature_fit``, :func:`fit_class_features`): a class alone in
the batch has its image's own features read off the gradient, so its image is the one whose features they are
(feature inversion, Mahendran & Vedaldi 2015); the images of a repeated class must add up to the class's summed
features, a constraint that pulls them apart from a shared start. Each recovered class is fitted on its own by
L-BFGS, after the method's gradient matching.
"""

from __future__ import annotations

import logging
import math
import weakref
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor, nn

from privacy_attacks import cache
from privacy_attacks.engine.priors import total_variation
from privacy_attacks.errors import ConfigError, require_int, require_positive
from privacy_attacks.seeding import generator, seeded

log = logging.getLogger(__name__)
SETTINGS = ("simulated_batches", "hidden", "epochs", "batch_size", "lr", "ridge")
FEATURE_STD_FLOOR = 1e-3  # features that hardly vary over the attacker's images are scaled as if they varied this much


# The output layer of each shared model that :func:`locate_output_linear` has run: its qualified name, or None where
# no nn.Linear gives the model's outputs.
_OUTPUT_LINEAR: weakref.WeakKeyDictionary[nn.Module, str | None] = weakref.WeakKeyDictionary()
NO_LINEAR = "method=dlg, which optimises the labels too, and no init=gradient_decoder or feature_fit"


@torch.no_grad()
def locate_output_linear(model: nn.Module, shape: tuple[int, ...]) -> str | None:
    """Find, by a forward pass of a zero image of ``shape`` (C, H, W), the ``nn.Linear`` whose output is the model's
    (the logits: the layer iDLG's labels and the decoder's features are read from), whatever the order its layers
    were declared in; remembered for ``model`` (:func:`last_linear_named`). Returns its qualified name; None where
    no ``nn.Linear`` gives the outputs (the last one run, when none gives them as they are, if it has as many outputs
    as the model) or they are not one tensor. Two zero images, so that an output squeezed to (K,) keeps its batch."""
    names = {module: name for name, module in model.named_modules() if isinstance(module, nn.Linear)}
    ran: list[tuple[nn.Module, Tensor]] = []
    hooks = [module.register_forward_hook(lambda m, _inputs, out: ran.append((m, out))) for module in names]
    try:
        logits = model(torch.zeros(2, *shape, device=next(model.parameters()).device))
    finally:
        for hook in hooks:
            hook.remove()
    if not isinstance(logits, Tensor):  # not one tensor of logits: no layer gives them
        _OUTPUT_LINEAR[model] = None
        return None
    producing = [module for module, out in ran if out is logits]
    if not producing and ran and ran[-1][1].shape == logits.shape:
        producing = [ran[-1][0]]
    _OUTPUT_LINEAR[model] = names[producing[-1]] if producing else None
    return _OUTPUT_LINEAR[model]


def last_linear_named(model: nn.Module) -> tuple[str, nn.Linear]:
    """The qualified name and the module of the model's output ``nn.Linear``: the one :func:`locate_output_linear`
    found, else the last in ``named_modules`` order."""
    linears = dict((name, module) for name, module in model.named_modules() if isinstance(module, nn.Linear))
    if not linears:
        raise ConfigError(
            "Reading labels or features off the gradient needs a shared model with an nn.Linear layer: choose a "
            f"model with one, or a method that reads neither ({NO_LINEAR})."
        )
    if model not in _OUTPUT_LINEAR:
        return list(linears.items())[-1]
    name = _OUTPUT_LINEAR[model]
    if name is None:
        raise ConfigError(
            f"Reading labels or features off the gradient needs a shared model whose outputs are an nn.Linear layer's "
            f"({type(model).__name__}'s are not: its last layer is another, or its outputs are transformed after it): "
            f"choose such a model, or a method that reads neither ({NO_LINEAR})."
        )
    return name, linears[name]


def last_linear_module(model: nn.Module) -> nn.Linear:
    """The model's last ``nn.Linear``, whose input features the decoder reads (it needs a bias)."""
    layer = last_linear_named(model)[1]
    if layer.bias is None:
        raise ConfigError(
            "init=gradient_decoder and feature_fit read the features of the shared model's last linear layer off its "
            "gradient: the model needs a last nn.Linear with a bias."
        )
    return layer


def last_linear(model: nn.Module, gradient: list[Tensor]) -> tuple[Tensor, Tensor | None]:
    """The gradient of the model's last ``nn.Linear`` (weight (C, D), bias (C,) or None) within ``gradient``, the
    gradients of ``model.named_parameters()`` in their order."""
    named = dict(zip((name for name, _ in model.named_parameters()), gradient, strict=True))
    name = last_linear_named(model)[0]
    prefix = f"{name}." if name else ""
    return named[f"{prefix}weight"], named.get(f"{prefix}bias")


def features_and_logits(model: nn.Module, images: Tensor) -> tuple[Tensor, Tensor]:
    """The inputs h (N, D) of the model's last linear layer and the logits (N, K) for ``images`` (N, C, H, W),
    differentiable (read with a forward hook)."""
    seen = []
    hook = last_linear_module(model).register_forward_hook(lambda _m, inputs, _out: seen.append(inputs[0].flatten(1)))
    try:
        logits = model(images)
    finally:
        hook.remove()
    return seen[0], logits


@torch.no_grad()
def last_layer_inputs(model: nn.Module, images: Tensor, chunk: int = 2000) -> tuple[Tensor, Tensor]:
    """The inputs h (N, D) of the model's last linear layer and the softmax p (N, K), for ``images`` (N, C, H, W)."""
    device = next(model.parameters()).device
    parts = [features_and_logits(model, part.to(device)) for part in images.split(chunk)]
    return torch.cat([h.cpu() for h, _ in parts]), torch.cat([z.softmax(dim=-1).cpu() for _, z in parts])


def class_features(rows: Tensor, mass: Tensor, counts: Tensor, fallback: Tensor) -> Tensor:
    """The mean last-layer features of each class's images in a batch, (..., K, D).

    Args:
        rows: B · ∂L/∂W of the last linear layer, (..., K, D).
        mass: q_c = Σ_i p_ic = B · ∂L/∂b_c + n_c, (..., K).
        counts: n_c, the images of each class in the batch (recovered), (..., K).
        fallback: (D,) an estimate of the mean feature h̄ (the attacker's images'), for S / B where every class is
            in the batch (no absent class to read S from).
    """
    absent = (counts == 0).to(rows.dtype)
    per_absent = rows / mass.clamp_min(1e-12).unsqueeze(-1)  # S / B wherever the class is absent
    mean_feature = (absent.unsqueeze(-1) * per_absent).sum(-2) / absent.sum(-1, keepdim=True).clamp_min(1)
    mean_feature = torch.where(absent.sum(-1, keepdim=True) > 0, mean_feature, fallback.expand_as(mean_feature))
    summed = mass.unsqueeze(-1) * mean_feature.unsqueeze(-2) - rows  # T_c = q_c S / B − row_c
    return summed / counts.clamp_min(1).unsqueeze(-1)


class GradientDecoder(nn.Module):
    """Mean class features (M, D), classes (M,) and their counts / B (M,) -> images (M, C, H, W) in [0, 1].

    ``ridge`` (F, P): the ridge regression from the design [standardised features, one-hot class, count / B, 1]
    (F = D + K + 2) to the P = C·H·W pixels; ``residual``: an MLP on the same design, added (zero at the start).
    """

    def __init__(self, features: int, classes: int, image_shape: tuple[int, ...], hidden: int):
        super().__init__()
        self.classes, self.image_shape = int(classes), tuple(int(s) for s in image_shape)
        pixels, design = math.prod(self.image_shape), features + classes + 2
        self.register_buffer("feature_mean", torch.zeros(features))
        self.register_buffer("feature_std", torch.ones(features))
        self.register_buffer("ridge", torch.zeros(design, pixels))
        self.residual = nn.Sequential(
            nn.Linear(design, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, pixels)
        )
        nn.init.zeros_(self.residual[-1].weight)
        nn.init.zeros_(self.residual[-1].bias)

    def design(self, features: Tensor, classes: Tensor, fractions: Tensor) -> Tensor:
        standard = (features - self.feature_mean) / self.feature_std
        one_hot = F.one_hot(classes.long(), self.classes).to(features.dtype)
        return torch.cat([standard, one_hot, fractions.unsqueeze(1), torch.ones_like(fractions).unsqueeze(1)], 1)

    def forward(self, features: Tensor, classes: Tensor, fractions: Tensor) -> Tensor:
        design = self.design(features, classes, fractions)
        pixels = design @ self.ridge + self.residual(design)
        return pixels.clamp(0, 1).view(-1, *self.image_shape)


def simulated_clients(
    features: Tensor,
    probabilities: Tensor,
    images: Tensor,
    labels: Tensor,
    batch_size: int,
    count: int,
    seed: int,
    chunk: int = 2048,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``count`` clients of ``batch_size`` of the attacker's images, drawn from ``(seed, "gradient_decoder")``:
    for every class present in one, (its mean features as :func:`class_features` reads them (M, D), the class (M,),
    its count / B (M,), the mean of its images (M, C, H, W)). Exactly what the decoder sees at attack time, from
    the attacker's images only. Built ``chunk`` clients at a time (each client's rows are its own), so memory holds
    one chunk's batches, not all ``count``."""
    index = torch.randint(len(images), (count, batch_size), generator=generator(seed, "gradient_decoder"))
    fallback = features.mean(0)
    parts = [_client_classes(features, probabilities, images, labels, rows, fallback) for rows in index.split(chunk)]
    read, cls, counts, means = (torch.cat(column) for column in zip(*parts))
    return read, cls, counts / batch_size, means


def _client_classes(
    features: Tensor, probabilities: Tensor, images: Tensor, labels: Tensor, index: Tensor, fallback: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """For the clients ``index`` (N, B) of :func:`simulated_clients`: each present class's read features, class, count
    and mean image, client by client in class order."""
    one_hot = F.one_hot(labels[index].long(), probabilities.shape[1]).to(features.dtype)  # (N, B, K)
    rows = torch.einsum("nbk,nbd->nkd", probabilities[index] - one_hot, features[index])
    counts = one_hot.sum(1)
    read = class_features(rows, probabilities[index].sum(1), counts, fallback)
    client, cls = (counts > 0).nonzero(as_tuple=True)
    flat = images[index].flatten(2).to(features.dtype)  # (N, B, P)
    means = torch.einsum("nbk,nbp->nkp", one_hot, flat) / counts.clamp_min(1).unsqueeze(-1)
    return read[client, cls], cls, counts[client, cls], means[client, cls].view(-1, *images.shape[1:])


def train_gradient_decoder(
    model: nn.Module, images: Tensor, labels: Tensor, batch_size: int, settings: dict[str, Any], seed: int
) -> GradientDecoder:
    """Fit a :class:`GradientDecoder` for ``model``'s clients of ``batch_size`` on the attacker's ``images``
    (A, C, H, W) / ``labels`` (A,): the ridge regression in closed form, then the residual MLP with Adam (one-cycle
    learning rate), ``settings``: ``simulated_batches``, ``hidden``, ``epochs``, ``batch_size``, ``lr``, ``ridge``."""
    features, probabilities = last_layer_inputs(model, images)
    read, cls, fractions, targets = simulated_clients(
        features, probabilities, images, labels, batch_size, int(settings["simulated_batches"]), seed
    )
    with seeded(seed, "gradient_decoder_init"):
        shape, hidden = tuple(images.shape[1:]), int(settings["hidden"])
        decoder = GradientDecoder(features.shape[1], probabilities.shape[1], shape, hidden)
    decoder.feature_mean.copy_(features.mean(0))
    decoder.feature_std.copy_(features.std(0).clamp_min(FEATURE_STD_FLOOR))
    design, flat = decoder.design(read, cls, fractions), targets.flatten(1)
    gram = design.T @ design + float(settings["ridge"]) * torch.eye(design.shape[1])
    decoder.ridge.copy_(torch.linalg.solve(gram, design.T @ flat))
    residual_targets = flat - design @ decoder.ridge
    epochs, rows = int(settings["epochs"]), int(settings["batch_size"])
    optimizer = torch.optim.Adam(decoder.residual.parameters(), lr=float(settings["lr"]))
    total = max(1, epochs * math.ceil(len(design) / rows))
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, float(settings["lr"]), total_steps=total)
    order_source = generator(seed, "gradient_decoder_batches")
    for epoch in range(epochs):
        for part in torch.randperm(len(design), generator=order_source).split(rows):
            loss = F.mse_loss(decoder.residual(design[part]), residual_targets[part])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
        log.info("gradient decoder: epoch %d/%d, residual MSE %.5f", epoch + 1, epochs, float(loss.detach()))
    return decoder.eval().requires_grad_(False)


def validate_settings(settings: DictConfig) -> None:
    """:class:`ConfigError` for a bad ``gradient_decoder`` setting, before any work."""
    for key in ("simulated_batches", "hidden", "batch_size"):
        require_int(settings[key], f"gradient_decoder.{key}")
    require_int(settings.epochs, "gradient_decoder.epochs", minimum=0)
    require_positive(settings.lr, "gradient_decoder.lr")
    require_positive(settings.ridge, "gradient_decoder.ridge")
    if float(settings.anchor) < 0:
        raise ConfigError(f"gradient_decoder.anchor={settings.anchor} is not allowed: it must be 0 or more.")


def provision_gradient_decoder(
    model: nn.Module,
    load_public: Callable[[], tuple[Tensor, Tensor]],
    data_key: dict[str, Any],
    batch_size: int,
    settings: DictConfig | dict[str, Any],
    seed: int,
    cache_dir: str | Path,
    image_shape: tuple[int, ...],
) -> GradientDecoder:
    """The decoder for ``model``'s clients of ``batch_size`` (images of ``image_shape`` (C, H, W)), loaded from the
    cache or trained on ``load_public()`` (the attacker's images and labels; called only to train). Keyed by the
    model's weights, the data, the batch size, the settings and the attacker's seed; a cached file that does not fit
    the decoder is a :class:`~privacy_attacks.errors.CheckpointError` (:func:`~privacy_attacks.cache.load_state`)."""
    settings = {key: settings[key] for key in SETTINGS}
    spec = {
        "kind": "gradient_decoder",
        "model": cache.weights_digest(model),
        "data": data_key,
        **settings,
        "client_batch_size": int(batch_size),
        "seed": int(seed),
        **cache.device_entry("cpu"),
    }
    path = cache.cache_path(cache_dir, "gradient-decoder", spec)
    layer = last_linear_module(model)
    decoder = GradientDecoder(layer.in_features, layer.out_features, image_shape, int(settings["hidden"]))

    def train(path: Path) -> GradientDecoder:
        images, labels = load_public()
        count = settings["simulated_batches"]
        log.info("Training the gradient decoder on %d simulated clients (cached at %s).", count, path)
        trained = train_gradient_decoder(model, images.float(), labels, batch_size, settings, seed)
        cache.save(path, {k: v.detach().cpu() for k, v in trained.state_dict().items()})
        return trained

    load = partial(cache.load_state, module=decoder, what="gradient decoder")
    return cache.provision(path, create=train, load=load)[0].eval().requires_grad_(False)


def read_class_features(
    weight_gradient: Tensor, bias_gradient: Tensor, labels: Tensor, batch_size: int, fallback: Tensor
) -> Tensor:
    """The mean last-layer features (K, D) of each recovered class's images (:func:`class_features`), from the
    client's last-layer gradient (``weight_gradient`` (K, D), ``bias_gradient`` (K,)) and the recovered ``labels``
    (B,); ``fallback`` (D,): the mean feature, used where every class is in the batch. Double precision, CPU."""
    weight_gradient, bias_gradient = weight_gradient.detach().cpu().double(), bias_gradient.detach().cpu().double()
    counts = torch.bincount(labels.detach().cpu().long(), minlength=weight_gradient.shape[0]).double()
    mass = batch_size * bias_gradient + counts
    return class_features(batch_size * weight_gradient, mass, counts, fallback.detach().cpu().double())


@torch.no_grad()
def decoded_guess(
    decoder: GradientDecoder, weight_gradient: Tensor, bias_gradient: Tensor, labels: Tensor, batch_size: int
) -> Tensor:
    """Each image's start (B, C, H, W): the decoded mean image of its recovered label's images, from the client's
    last-layer gradient (``weight_gradient`` (K, D), ``bias_gradient`` (K,)) and the recovered ``labels`` (B,)."""
    labels = labels.detach().cpu().long()
    read = read_class_features(weight_gradient, bias_gradient, labels, batch_size, decoder.feature_mean)
    fractions = torch.bincount(labels, minlength=decoder.classes)[labels] / batch_size
    return decoder(read[labels].float(), labels, fractions.float())


def fit_class_features(
    model: nn.Module, images: Tensor, labels: Tensor, read: Tensor, settings: DictConfig | dict[str, Any], seed: int
) -> Tensor:
    """Each recovered class's images fitted to the features read off the gradient: (B, C, H, W) in [0, 1].

    For class c with n_c images (``labels`` (B,)) and read mean features h̄_c (``read`` (K, D),
    :func:`read_class_features`), :func:`fit_summed_features` from ``images`` (B, C, H, W). A class alone in the
    batch is feature inversion of its image (exact features up to the softmax's spread), with TV weight
    ``tv_alone``; a repeated class's images start apart, each plus Gaussian noise of std ``noise`` drawn from
    ``(seed, "feature_fit")``, and only their sum is known: TV weight ``tv_repeated``.
    ``settings``: ``steps``, ``tv_alone``, ``tv_repeated``, ``noise``.
    """
    steps, noise = int(settings["steps"]), float(settings["noise"])
    fitted, source = images.detach().clone(), generator(seed, "feature_fit")
    for cls in labels.unique().tolist():
        members = (labels == cls).nonzero().flatten()
        start, alone = fitted[members], len(members) == 1
        if not alone and noise > 0:
            start = start + noise * torch.randn(start.shape, generator=source).to(start.device)
        target = len(members) * read[cls].to(start.device, start.dtype)
        tv = float(settings["tv_alone" if alone else "tv_repeated"])
        fitted[members] = fit_summed_features(model, start, target, steps, tv)
    return fitted


def fit_summed_features(model: nn.Module, start: Tensor, target: Tensor, steps: int, tv: float) -> Tensor:
    """Images x (n, C, H, W) in [0, 1] from ``start`` minimising ‖Σ_i h(x_i) − ``target``‖² + ``tv`` · Σ_i ℓ_TV(x_i)
    (h: the last linear layer's input (D,); ℓ_TV the lecture's TV) by L-BFGS with a strong Wolfe line search."""
    pixels = start.detach().clamp(0, 1).requires_grad_(True)
    optimizer = torch.optim.LBFGS([pixels], lr=1, max_iter=steps, history_size=50, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        optimizer.zero_grad()
        clamped = pixels.clamp(0, 1)
        features, _ = features_and_logits(model, clamped)
        loss = (features.sum(0) - target).pow(2).sum() + tv * total_variation(clamped).sum()
        loss.backward()
        return loss

    if steps > 0:
        optimizer.step(closure)
    return pixels.detach().clamp(0, 1)


def validate_feature_fit(settings: DictConfig) -> None:
    """:class:`ConfigError` for a bad ``feature_fit`` setting, before any work."""
    require_int(settings.steps, "feature_fit.steps", minimum=0)
    for key in ("tv_alone", "tv_repeated", "noise"):
        require_positive(settings[key], f"feature_fit.{key}", allow_zero=True)
