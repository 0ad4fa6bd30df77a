"""Label-only membership inference (Choquette-Choo, Tramèr, Carlini & Papernot 2021, "Label-only membership
inference attacks", ICML): the attacker sees the target's predicted label only.

- :class:`LabelOnlyAugmentAttack`, the paper's "data augmentation" attack: each image x of label y is queried in K
  augmented copies, the translations by (i, j) pixels with |i| + |j| <= ``max_shift`` (the paper's d; the
  untranslated image among them) and ``noise_copies`` copies with Gaussian noise of standard deviation ``noise_std``.
  A model is more robust on what it was trained on, so members keep their label in more copies: the score is the
  fraction of the K copies the target labels y. Every copy is one query.
- :class:`LabelOnlyBoundaryAttack`, the paper's "decision boundary distance" attack: the score is the L2 distance from
  x to the nearest image the target labels otherwise, found by a black-box search (random directions and bisection,
  then HopSkipJump's gradient-estimation steps, Chen, Jordan & Wainwright 2020); members lie farther from the
  boundary. Images the target already labels wrongly score 0. Every image of the search is one query.
  ``calibration=online|offline`` calibrates the distance by each image's difficulty as LiRA calibrates confidence
  (Carlini et al. 2022; Watson et al. 2022): the same search on the attacker's own shadow models (which it runs
  itself, no query), and the target's distance scored by the likelihood ratio of Gaussians fitted to the IN and OUT
  models' distances (online), or as a z-score against the OUT models' (offline).

Uncalibrated, both set the hard decision's threshold on the attacker's own non-members (as the threshold attacks
do): the (1 - ``reference_fpr``) quantile of their scores; AUC and TPR at FPR need none.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import Tensor

from privacy_attacks.batched import in_batches, net_device
from privacy_attacks.errors import ConfigError, require_choice, require_int, require_positive
from privacy_attacks.seeding import derive_seed

from .augment import translate, translations
from .base import AttackContext, AttackOutput, MembershipAttack, config_key
from .lira import calibration_shadows, check_online_sizes, likelihood_ratio, resolve_fixed_variance
from .shokri import check_shadow_count

LabelFunction = Callable[[Tensor], Tensor]


class LabelOnlyAttack(MembershipAttack):
    """A score from the target's labels alone, its hard decision calibrated on the attacker's own non-members.

    Subclasses define :meth:`scores` and :attr:`queries_per_image`.

    Args:
        reference_size: the attacker's own images (non-members) the hard decision's threshold is calibrated on.
        reference_fpr: the fraction of those known non-members the threshold flags.
    """

    name = "label_only"

    def __init__(self, reference_size: int = 1000, reference_fpr: float = 0.5):
        require_int(reference_size, f"methods.{self.name}.reference_size")
        if not 0 < reference_fpr < 1:
            raise ConfigError(
                f"methods.{self.name}.reference_fpr={reference_fpr!r} is not allowed: it must be in (0, 1)."
            )
        self.reference_size, self.reference_fpr = reference_size, reference_fpr

    @property
    def queries_per_image(self) -> int:
        """The queries the score of one image takes."""
        raise NotImplementedError

    def check_sizes(self, train_size: int, eval_size: int, attacker_size: int) -> None:
        """The threshold needs some of the attacker's own images."""
        if attacker_size < 1:
            raise ConfigError(f"method={self.name} calibrates its threshold on the attacker's own images: none.")

    def queries_needed(self, train_size: int, eval_size: int, attacker_size: int) -> int:
        """Images asked of the target: :attr:`queries_per_image` for each evaluation and calibration image."""
        return self.queries_per_image * (eval_size + min(self.reference_size, attacker_size))

    def scores(self, context: AttackContext, images: Tensor, labels: Tensor, role: str) -> Tensor:
        """(N,) float64 membership scores of ``images`` (N, C, H, W) of ``labels`` (N,); ``role`` ("eval" or
        "reference") names the draw its randomness derives from."""
        raise NotImplementedError

    def predicted_labels(self, context: AttackContext, images: Tensor) -> Tensor:
        """(N,) the target's top-1 labels for ``images`` (N, C, H, W): one query each, under any output mode."""
        return context.query_log_probs(images).argmax(dim=1)

    def __call__(self, context: AttackContext) -> AttackOutput:
        eval_scores = self.scores(context, context.eval_images, context.eval_labels, "eval")
        n = min(self.reference_size, len(context.attacker_labels))
        reference = self.scores(context, context.attacker_images[:n], context.attacker_labels[:n], "reference")
        threshold = torch.quantile(reference, 1 - self.reference_fpr)
        info = {"attack/threshold": float(threshold), "attack/queries_per_image": float(self.queries_per_image)}
        return AttackOutput(eval_scores, (eval_scores > threshold).long(), info)


class LabelOnlyAugmentAttack(LabelOnlyAttack):
    """The fraction of augmented copies of each image that the target labels correctly (see the module).

    Args:
        max_shift: translations by up to this many pixels in |i| + |j| (1: 5 copies, 2: 13).
        noise_copies: copies with Gaussian pixel noise besides the translations.
        noise_std: the noise's standard deviation, in pixel units ([0, 1] images).
        reference_size, reference_fpr: as :class:`LabelOnlyAttack`'s.
    """

    name = "label_only_augment"

    def __init__(
        self,
        max_shift: int = 1,
        noise_copies: int = 0,
        noise_std: float = 0.1,
        reference_size: int = 1000,
        reference_fpr: float = 0.5,
    ):
        super().__init__(reference_size, reference_fpr)
        require_int(max_shift, "methods.label_only_augment.max_shift", minimum=0)
        require_int(noise_copies, "methods.label_only_augment.noise_copies", minimum=0)
        require_positive(noise_std, "methods.label_only_augment.noise_std")
        self.shifts = translations(max_shift)
        if len(self.shifts) + noise_copies < 2:
            raise ConfigError(
                "method=label_only_augment needs at least two copies of each image: set "
                "methods.label_only_augment.max_shift >= 1 or noise_copies >= 1."
            )
        self.noise_copies, self.noise_std = noise_copies, noise_std

    @property
    def copies(self) -> int:
        """K: the queries per image."""
        return len(self.shifts) + self.noise_copies

    @property
    def queries_per_image(self) -> int:
        return self.copies

    def augmented(self, images: Tensor, seed: int) -> Tensor:
        """(K, N, C, H, W): the translations, then the noisy copies (noise from ``seed``)."""
        copies = [translate(images, shift) for shift in self.shifts]
        if self.noise_copies:
            generator = torch.Generator().manual_seed(seed)
            noise = torch.randn((self.noise_copies, *images.shape), generator=generator, dtype=images.dtype)
            copies += list(images.unsqueeze(0) + self.noise_std * noise)
        return torch.stack(copies)

    def scores(self, context: AttackContext, images: Tensor, labels: Tensor, role: str) -> Tensor:
        """(N,) float64: the fraction of each image's K copies the target labels correctly."""
        copies = self.augmented(images, derive_seed(context.seed, "label_only_augment", role) % 2**63)
        predicted = self.predicted_labels(context, copies.flatten(0, 1)).view(self.copies, len(labels))
        return (predicted == labels.unsqueeze(0)).double().mean(dim=0)


def unit_directions(count: int, shape: torch.Size, generator: torch.Generator) -> Tensor:
    """(count, *shape) Gaussian directions of unit L2 norm each."""
    directions = torch.randn((count, *shape), generator=generator)
    return directions / directions.flatten(1).norm(dim=1).view(-1, *[1] * len(shape))


class LabelOnlyBoundaryAttack(LabelOnlyAttack):
    """The L2 distance from each image to the target's decision boundary, searched with labels alone (the module).

    The search, for N images x of labels y at once: the image itself (one query; labelled wrongly: distance 0);
    then along each of ``directions`` random unit directions u, the radius r where ``clamp(x + r u, 0, 1)`` first
    leaves label y, bracketed in (0, ``max_radius``] and bisected ``search_steps`` times; the nearest crossing found
    is the start of ``refine_steps`` HopSkipJump iterations (Chen et al. 2020): at the boundary point, the gradient
    of the label change is estimated from ``gradient_queries`` probes at distance ``probe_radius`` x the current
    distance, the point steps along it by the current distance over the square root of the iteration, and the
    segment from x to the step is bisected again; the distance only ever decreases. Images whose label survives
    ``max_radius`` in every direction score ``max_radius``. The random directions and probes are drawn once from the
    attack's seed and shared by all images (and by the target and the shadow models), so an image's score does not
    depend on the others.

    Args:
        directions: random directions per image.
        search_steps: bisection steps per search.
        max_radius: the largest L2 distance searched, in pixel units ([0, 1] images; an MNIST image's own norm is
            about 9).
        refine_steps: HopSkipJump iterations after the random search (0: none).
        gradient_queries: probes per gradient estimate.
        probe_radius: the probes' distance from the boundary point, relative to the current distance.
        calibration: "none"; "online" (shadow models IN and OUT of each evaluation image, online LiRA's, shared
            cache) or "offline" (OUT only, offline LiRA's): the distance calibrated per image (see the module).
        num_shadows: the shadow models of a calibration.
        fixed_variance: one variance for all images in the calibration's Gaussians (true), one per image (false) or
            ``"auto"`` (true below 64 shadow models: :func:`~.lira.resolve_fixed_variance`).
        reference_size, reference_fpr: as :class:`LabelOnlyAttack`'s (uncalibrated only).
        keys: config keys of arguments set elsewhere, named in errors (:func:`~.base.config_key`).
    """

    name = "label_only_boundary"
    calibrations = ("none", "online", "offline")

    def __init__(
        self,
        directions: int = 8,
        search_steps: int = 10,
        max_radius: float = 10.0,
        refine_steps: int = 4,
        gradient_queries: int = 32,
        probe_radius: float = 0.1,
        calibration: str = "none",
        num_shadows: int = 16,
        fixed_variance: bool | str = "auto",
        reference_size: int = 1000,
        reference_fpr: float = 0.5,
        keys: Mapping[str, str] | None = None,
    ):
        super().__init__(reference_size, reference_fpr)
        require_int(directions, "methods.label_only_boundary.directions")
        require_int(search_steps, "methods.label_only_boundary.search_steps")
        require_positive(max_radius, "methods.label_only_boundary.max_radius")
        require_int(refine_steps, "methods.label_only_boundary.refine_steps", minimum=0)
        require_int(gradient_queries, "methods.label_only_boundary.gradient_queries")
        require_positive(probe_radius, "methods.label_only_boundary.probe_radius")
        require_choice(calibration, self.calibrations, "methods.label_only_boundary.calibration")
        if calibration != "none":
            check_shadow_count(num_shadows, config_key(keys, "num_shadows"))
        self.directions, self.search_steps, self.max_radius = directions, search_steps, max_radius
        self.refine_steps, self.gradient_queries, self.probe_radius = refine_steps, gradient_queries, probe_radius
        self.fixed_variance = resolve_fixed_variance(fixed_variance, num_shadows, config_key(keys, "fixed_variance"))
        self.calibration, self.num_shadows = calibration, num_shadows
        self.shadow_answers = calibration != "none"  # its shadow models answer as the API would (shadow_defense)

    @property
    def queries_per_image(self) -> int:
        """1 + directions x (1 + search_steps) + refine_steps x (gradient_queries + 1 + search_steps)."""
        search = 1 + self.search_steps
        return 1 + self.directions * search + self.refine_steps * (self.gradient_queries + search)

    def check_sizes(self, train_size: int, eval_size: int, attacker_size: int) -> None:
        """Uncalibrated: some of the attacker's images; calibrated: those its shadow models need."""
        if self.calibration == "online":
            check_online_sizes(train_size, eval_size, attacker_size)
        elif self.calibration == "offline" and attacker_size < 2 * train_size:
            raise ConfigError(
                f"attacker_size={attacker_size} is too small for the boundary attack's offline shadow models: "
                f"{2 * train_size} images needed."
            )
        else:
            super().check_sizes(train_size, eval_size, attacker_size)

    def queries_needed(self, train_size: int, eval_size: int, attacker_size: int) -> int:
        """The evaluation images' searches, and the calibration images' when uncalibrated."""
        if self.calibration == "none":
            return super().queries_needed(train_size, eval_size, attacker_size)
        return self.queries_per_image * eval_size

    def scores(self, context: AttackContext, images: Tensor, labels: Tensor, role: str) -> Tensor:
        """(N,) float64: each image's distance to the target's boundary (0 when labelled wrongly, at most
        ``max_radius``)."""
        return self.distances(lambda x: self.predicted_labels(context, x), images, labels, context.seed, role)

    def distances(self, label: LabelFunction, images: Tensor, labels: Tensor, seed: int, role: str) -> Tensor:
        """(N,) float64: the distance search (the class docstring) of ``images`` (N, C, H, W) of ``labels`` (N,)
        against the classifier ``label`` (M, C, H, W) -> (M,); its random draws from ``seed`` and ``role``."""
        generator = torch.Generator().manual_seed(derive_seed(seed, "label_only_boundary", role) % 2**63)
        images = images.float()
        n, shape = len(images), images.shape[1:]
        distance = torch.full((n,), float(self.max_radius))
        nearest = images.clone()
        found = torch.zeros(n, dtype=torch.bool)
        for direction in unit_directions(self.directions, shape, generator):
            step = (self.max_radius * direction).expand_as(images)
            points, radii, ends = self.crossings(label, images, labels, step)
            better = ends & (radii < distance)
            distance, found = torch.where(better, radii, distance), found | better
            nearest[better] = points[better]
        for iteration in range(1, self.refine_steps + 1):
            probes = unit_directions(self.gradient_queries, shape, generator)
            gradient = self.boundary_gradient(label, nearest, labels, distance, probes)
            step_size = distance / iteration**0.5  # HopSkipJump's schedule
            step = nearest + step_size.view(-1, 1, 1, 1) * gradient - images
            points, radii, ends = self.crossings(label, images, labels, step)
            better = found & ends & (radii < distance)
            distance = torch.where(better, radii, distance)
            nearest[better] = points[better]
        wrong = label(images) != labels
        return torch.where(wrong, 0.0, distance).double()

    def crossings(
        self, label: LabelFunction, images: Tensor, labels: Tensor, steps: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """For images x (M, C, H, W) of ``labels`` y and steps s (M, C, H, W): whether the end ``clamp(x + s, 0, 1)``
        is labelled otherwise (M,) bool, and then the point ``clamp(x + t s, 0, 1)`` (M, C, H, W) nearest x still
        labelled otherwise after ``search_steps`` bisections of t in (0, 1], with its distance from x (M,)
        (meaningless where the end keeps y). 1 + ``search_steps`` queries per image."""
        ends = self.flips(label, images, labels, steps)
        low, high = torch.zeros(len(images)), torch.ones(len(images))
        for _ in range(self.search_steps):
            middle = (low + high) / 2
            flipped = self.flips(label, images, labels, steps * middle.view(-1, 1, 1, 1))
            high = torch.where(flipped, middle, high)
            low = torch.where(flipped, low, middle)
        points = (images + steps * high.view(-1, 1, 1, 1)).clamp(0, 1)
        return points, (points - images).flatten(1).norm(dim=1), ends

    @staticmethod
    def flips(label: LabelFunction, images: Tensor, labels: Tensor, steps: Tensor) -> Tensor:
        """(M,) bool: whether ``label`` reads ``clamp(images + steps, 0, 1)`` as other than ``labels`` (M queries)."""
        return label((images + steps).clamp(0, 1)) != labels

    def boundary_gradient(
        self, label: LabelFunction, points: Tensor, labels: Tensor, distance: Tensor, probes: Tensor
    ) -> Tensor:
        """(N, C, H, W) unit estimates of the direction in which the label leaves y at boundary ``points``
        (HopSkipJump's Monte-Carlo estimate with the mean as baseline): probes (K, C, H, W) of unit norm, each
        scaled by ``probe_radius`` x ``distance`` (N,); K x N queries."""
        k, n = len(probes), len(points)
        scale = (self.probe_radius * distance).view(1, n, 1, 1, 1)
        steps = (scale * probes.unsqueeze(1)).flatten(0, 1)
        flipped = self.flips(label, points.repeat(k, 1, 1, 1), labels.repeat(k), steps).view(k, n).float()
        signs = 2 * flipped - 1
        signs = signs - signs.mean(dim=0, keepdim=True)
        signs = torch.where((signs == 0).all(dim=0, keepdim=True), 2 * flipped - 1, signs)
        gradient = torch.einsum("kn,k...->n...", signs, probes)
        return gradient / gradient.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)

    def __call__(self, context: AttackContext) -> AttackOutput:
        if self.calibration == "none":
            return super().__call__(context)
        images, labels = context.eval_images, context.eval_labels
        online = self.calibration == "online"
        shadows, in_mask = calibration_shadows(context, self.num_shadows, online)
        target = self.scores(context, images, labels, "eval")
        shadow = torch.stack(
            [
                self.distances(shadow_labels(context, shadows.model(s)), images, labels, context.seed, "eval")
                for s in range(len(shadows))
            ]
        )  # (S, N)
        scores = likelihood_ratio(target, shadow, in_mask, self.fixed_variance, online)
        info = {
            "attack/queries_per_image": float(self.queries_per_image),
            "lira/num_shadows": float(len(shadows)),
            "lira/fixed_variance": float(self.fixed_variance),
        }
        return AttackOutput(scores, (scores > 0).long(), info)


def shadow_labels(context: AttackContext, net: torch.nn.Module, batch_size: int = 4096) -> LabelFunction:
    """The top-1 labels (M,) of the attacker's own model ``net`` for images (M, C, H, W), read as the API would
    answer them (:meth:`AttackContext.shadow_log_probs`: its output mode, and its defence under ``shadow_defense``),
    run in eval mode without gradients, on the CPU."""
    device = net_device(net)

    @torch.no_grad()
    def label(images: Tensor) -> Tensor:
        return context.shadow_log_probs(in_batches(net, images, batch_size=batch_size, device=device)).argmax(dim=1)

    return label
