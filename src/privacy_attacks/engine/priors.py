"""Image priors of the reconstruction engine: penalties, input transforms and periodic projections.

Every prior has a ``weight`` and is off at weight 0 (the engine skips it). Three kinds:

- a *penalty* adds ``weight * penalty(x)`` (per image, shape (N,)) to the loss:
  :class:`TotalVariation` (the lecture's ℓ_TV), :class:`PixelEnergy` (L2);
- a *transform* changes the images before each forward pass of the objective (not the
  images themselves): :class:`Jitter` (random translation, Mordvintsev et al. 2015;
  Olah et al. 2017, "Feature Visualization"), :class:`RandomAffine` (random rotation and scale, the augmentations of
  DeepInversion, Yin et al. 2020, and Plug & Play attacks, Struppek et al. 2022);
- a *projection* edits the images in place after a step: :class:`GaussianBlur` every ``every`` steps
  (Yosinski et al. 2015, "Understanding Neural Networks Through Deep Visualization"), :class:`CoarseToFine` in the
  first steps (multi-resolution optimisation: the octaves of Mordvintsev et al. 2015, "Inceptionism").
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from privacy_attacks.errors import ConfigError, require_fraction, require_int, require_positive


def total_variation(images: Tensor) -> Tensor:
    """The lecture's ℓ_TV per image: 1/M Σ_ij (x_{i,j+1} − x_{i,j})² + (x_{i+1,j} − x_{i,j})².

    ``images`` (N, C, H, W) -> (N,); M = C·H·W (784 for MNIST); differences that would leave
    the image are left out. A constant image has ℓ_TV = 0.
    """
    horizontal = (images[..., :, 1:] - images[..., :, :-1]).pow(2).sum(dim=(1, 2, 3))
    vertical = (images[..., 1:, :] - images[..., :-1, :]).pow(2).sum(dim=(1, 2, 3))
    return (horizontal + vertical) / images[0].numel()


class Prior(nn.Module):
    """Base of all priors: ``weight`` (off at 0) and three no-op hooks the subclasses fill in."""

    def __init__(self, weight: float = 0.0):
        super().__init__()
        self.weight = float(weight)

    @property
    def active(self) -> bool:
        return self.weight > 0

    def penalty(self, images: Tensor) -> Tensor | None:
        """Per-image penalty (N,) added as ``weight * penalty``; None if this prior has none."""
        return None

    def transform(self, images: Tensor) -> Tensor:
        """Applied to the images before each forward pass of the objective (differentiable)."""
        return images

    def project(self, images: Tensor, step: int) -> Tensor:
        """Applied to the images (no grad) after the optimiser step ``step`` (0-based)."""
        return images

    def use_generator(self, generator: torch.Generator) -> None:
        """Draw this prior's random numbers from ``generator`` (the engine's, derived from the attack seed)."""


class TotalVariation(Prior):
    """``weight`` · ℓ_TV(x) (see :func:`total_variation`); ``weight`` is the lecture's λ."""

    def penalty(self, images: Tensor) -> Tensor:
        return total_variation(images)


class PixelEnergy(Prior):
    """``weight`` · mean x² per image: pulls pixels towards black, MNIST's background.

    With ``border`` β > 0 each pixel's x² is weighted by 1 + β · r^``border_power``, r its distance from the image's
    centre in half-sides (0 at the centre, 1 at the middle of an edge, √2 in a corner): ink away from the centre costs
    more, as in a format that centres its objects (MNIST's digits sit in a central 20 x 20 box of the 28 x 28 image;
    LeCun et al. 1998). A high power leaves the centre almost free and weighs the border.
    """

    def __init__(self, weight: float = 0.0, border: float = 0.0, border_power: float = 4.0):
        super().__init__(weight)
        require_positive(border, "l2_border", allow_zero=True)
        require_positive(border_power, "l2_border_power")
        self.border, self.border_power = float(border), float(border_power)

    def pixel_weights(self, height: int, width: int, device: torch.device | None = None) -> Tensor:
        """The weight of each pixel's x², (H, W): 1 + β · r^power (all ones with ``border`` 0)."""
        ys = (torch.arange(height, device=device, dtype=torch.float32) - (height - 1) / 2) / (height / 2)
        xs = (torch.arange(width, device=device, dtype=torch.float32) - (width - 1) / 2) / (width / 2)
        radius = (ys[:, None].pow(2) + xs[None, :].pow(2)).sqrt()
        return 1 + self.border * radius.pow(self.border_power)

    def penalty(self, images: Tensor) -> Tensor:
        energy = images.pow(2)
        if self.border > 0:
            energy = energy * self.pixel_weights(*images.shape[-2:], device=images.device).to(images.dtype)
        return energy.flatten(1).mean(dim=1)


class Jitter(Prior):
    """Random translation before each forward pass by up to ``weight`` pixels in each direction.

    Every image moves by its own random (dy, dx) drawn from [-weight, weight] (wrapping at the border,
    like ``torch.roll``), so a reconstruction must keep working under small shifts and restarts that
    start alike (``init=zeros``) still part ways. The offsets come from the generator the engine gives
    (:meth:`use_generator`), never from the global RNG.
    """

    def __init__(self, weight: float = 0.0):
        super().__init__(weight)
        self.generator: torch.Generator | None = None

    def use_generator(self, generator: torch.Generator) -> None:
        self.generator = generator

    def transform(self, images: Tensor) -> Tensor:
        shift = int(round(self.weight))
        if shift == 0:
            return images
        if self.generator is None:
            raise RuntimeError("Jitter draws its shifts from its own generator: call use_generator() first.")
        n, c, h, w = images.shape
        dy, dx = torch.randint(-shift, shift + 1, (2, n), generator=self.generator)
        rows = ((torch.arange(h) - dy[:, None]) % h).to(images.device)  # (N, H): output row r reads row r - dy
        cols = ((torch.arange(w) - dx[:, None]) % w).to(images.device)  # (N, W)
        batch = torch.arange(n, device=images.device)[:, None, None, None]
        channel = torch.arange(c, device=images.device)[None, :, None, None]
        return images[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]


class RandomAffine(Prior):
    """Random rotation by up to ``weight`` degrees and rescaling by a factor in [1 − scale, 1 + scale] before each
    forward pass, one draw per image (bilinear, black outside the image): a reconstruction must keep its class
    under small rotations and size changes, as DeepInversion (Yin et al. 2020) and Plug & Play attacks (Struppek
    et al. 2022) ask of theirs, so it transfers to models other than the target. Draws from the engine's generator.
    """

    def __init__(self, weight: float = 0.0, scale: float = 0.0):
        super().__init__(weight)
        require_fraction(scale, "augment_scale")  # the key the reconstruction configs set it by
        self.scale = float(scale)
        self.generator: torch.Generator | None = None

    def use_generator(self, generator: torch.Generator) -> None:
        self.generator = generator

    def transform(self, images: Tensor) -> Tensor:
        if self.generator is None:
            raise RuntimeError("RandomAffine draws its transforms from its own generator: call use_generator() first.")
        n = len(images)
        angle, size = (2 * torch.rand(2, n, generator=self.generator, dtype=torch.float64) - 1).to(images.device)
        zoom = 1 / (1 + self.scale * size)  # sampling grid scaled by 1/s: the image scaled by s
        return affine_warp(images, angle * math.radians(self.weight), zoom)


def affine_warp(images: Tensor, angle: Tensor, zoom: Tensor, shift: Tensor | None = None) -> Tensor:
    """Each image of ``images`` (N, C, H, W) rotated by ``angle`` (N,) radians, its sampling grid scaled by ``zoom``
    (N,) (the image by 1 / zoom) and moved by ``shift`` (2, N) in normalised coordinates (x, y; 2 / W a pixel);
    bilinear, black outside the image."""
    cos, sin = torch.cos(angle) * zoom, torch.sin(angle) * zoom
    shift_x, shift_y = (torch.zeros_like(cos), torch.zeros_like(cos)) if shift is None else shift
    theta = torch.stack([torch.stack([cos, -sin, shift_x], 1), torch.stack([sin, cos, shift_y], 1)], 1)
    grid = F.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class GaussianBlur(Prior):
    """Blur the images with a Gaussian of standard deviation ``weight`` pixels every ``every`` steps."""

    def __init__(self, weight: float = 0.0, every: int = 4):
        super().__init__(weight)
        require_int(every, "every")
        self.every = int(every)
        if self.active:
            radius = max(1, math.ceil(3 * self.weight))
            offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
            kernel = torch.exp(-0.5 * (offsets / self.weight) ** 2)
            self.register_buffer("kernel", kernel / kernel.sum(), persistent=False)

    def project(self, images: Tensor, step: int) -> Tensor:
        if (step + 1) % self.every:
            return images
        channels, radius = images.shape[1], (len(self.kernel) - 1) // 2
        row = self.kernel.to(images).view(1, 1, 1, -1).expand(channels, 1, 1, -1)
        padded = F.pad(images, (radius, radius, 0, 0), mode="replicate")
        blurred = F.conv2d(padded, row, groups=channels)
        padded = F.pad(blurred, (0, 0, radius, radius), mode="replicate")
        return F.conv2d(padded, row.transpose(-1, -2), groups=channels)


class CoarseToFine(Prior):
    """Multi-resolution (coarse-to-fine) optimisation: after each of the first steps the images are averaged over
    blocks of ``weight`` × ``weight`` pixels (7 × 7 blocks of 4 pixels on a 28 × 28 image at ``weight`` 4), so the
    search settles the shape before the strokes; the block side halves every ``stage_steps`` steps (at ``weight`` 4:
    4, 2, then free at full resolution from step 2 · ``stage_steps``), as the octaves of Mordvintsev et al. 2015
    ("Inceptionism") move from coarse to fine. ``weight`` 0 or 1: off.

    The projection of step ``step``: images (N, C, H, W) -> (N, C, H, W), each block replaced by its mean (sides
    that the block does not divide: the last block is smaller)."""

    def __init__(self, weight: float = 0.0, stage_steps: int = 25):
        if float(weight) != int(weight):
            raise ConfigError(f"the coarsest block side must be a whole number of pixels, got {weight}.")
        require_int(stage_steps, "stage_steps")
        super().__init__(weight)
        self.stage_steps = int(stage_steps)

    @property
    def active(self) -> bool:
        return self.weight > 1

    def block(self, step: int) -> int:
        """The block side at ``step`` (0-based): ``weight`` halved every ``stage_steps`` steps; 1 means free."""
        return max(1, int(self.weight) >> (step // self.stage_steps))

    def project(self, images: Tensor, step: int) -> Tensor:
        side = self.block(step)
        if side == 1:
            return images
        height, width = images.shape[-2:]
        coarse = F.avg_pool2d(images, side, ceil_mode=True, count_include_pad=False)
        return coarse.repeat_interleave(side, dim=-2).repeat_interleave(side, dim=-1)[..., :height, :width]


class GuessDistance(Prior):
    """``weight`` · mean (x − x̂)² per image: stay near a guess x̂ of each image (e.g. a learned
    inversion network's output, :mod:`privacy_attacks.attacks.feature_inversion.inversion_network`).

    ``guess`` (B, C, H, W) holds one guess per target image; the engine's R·B images are
    restart-major, so image r·B + i is compared with guess i.
    """

    def __init__(self, weight: float = 0.0, guess: Tensor | None = None):
        super().__init__(weight)
        self.register_buffer("guess", None if guess is None else guess.detach().clone())

    def penalty(self, images: Tensor) -> Tensor:
        if self.guess is None:
            raise ValueError("GuessDistance needs a guess: build it with guess=(B, C, H, W) images.")
        guess = self.guess.repeat(len(images) // len(self.guess), 1, 1, 1)
        return (images - guess).pow(2).flatten(1).mean(dim=1)
