"""The malicious server: an imprint block in the shared model that makes the gradient give up whole images.

Fowl, Geiping, Czaja, Goldblum & Goldstein 2022, "Robbing the Fed: directly obtaining private data in federated
learning with modified models" (ICLR). A stronger attacker than the honest-but-curious server of DLG/iDLG/IG: the
server changes the model it sends. Before the shared network it inserts

    h = ReLU(W x + b),  W = (v, ..., v) (k rows),  b_i = -t_i,  x' = x + U h,  U = (u, ..., u) (k columns)

with x flattened (D pixels), v a measurement of the image (its mean brightness, v = 1/D), t_1 < ... < t_k the
quantiles of that measurement on public images (the attacker's own; none private), and u a small vector (the network
still sees nearly x). Row i fires for the images brighter than t_i, and every row gives an image the same
upstream gradient g_n = u . dL/dx'_n, so

    dL/dW_i = sum_{n: m(x_n) > t_i} g_n x_n,  dL/db_i = sum_{n: m(x_n) > t_i} g_n,

and an image alone in its bin (t_i, t_{i+1}] comes out exactly: x_n = (dW_i - dW_{i+1}) / (db_i - db_{i+1}). Bins
holding several images give their g-weighted mean; with k bins and B images each image is alone with probability
(1 - 1/k)^(B - 1) (k = 256, B = 64: 0.78). No optimisation: the recovery is one subtraction per bin.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class ImprintedModel(nn.Module):
    """``model`` behind an imprint block of ``thresholds`` (k,) ascending bins on the mean brightness (module doc).

    Its parameters: ``spread`` (D, k), ``imprint.weight`` (k, D), ``imprint.bias`` (k,), then ``model``'s as
    ``model.<name>``; :meth:`imprint_gradients` picks the block's out of a gradient.

    Args:
        model: the shared network, (N, C, H, W) -> logits.
        image_shape: (C, H, W) of its inputs.
        thresholds: (k,) ascending brightness thresholds t_i.
        scale: the size of u (each pixel's share of the block's output): small, so the network still sees x.
    """

    def __init__(self, model: nn.Module, image_shape: tuple[int, ...], thresholds: Tensor, scale: float = 1e-3):
        super().__init__()
        pixels = int(torch.tensor(image_shape).prod())
        bins = len(thresholds)
        self.image_shape = tuple(image_shape)
        self.imprint = nn.Linear(pixels, bins)
        self.spread = nn.Parameter(torch.full((pixels, bins), scale))
        with torch.no_grad():
            self.imprint.weight.fill_(1.0 / pixels)  # every row measures the mean brightness
            self.imprint.bias.copy_(-thresholds.float())
        self.model = model

    def imprint_gradients(self, gradient: list[Tensor]) -> tuple[Tensor, Tensor]:
        """dL/dW (k, D) and dL/db (k,) of the imprint block within ``gradient`` (one tensor per parameter, in
        ``named_parameters`` order)."""
        named = dict(zip((name for name, _ in self.named_parameters()), gradient, strict=True))
        return named["imprint.weight"], named["imprint.bias"]

    def forward(self, x: Tensor) -> Tensor:
        h = torch.relu(self.imprint(x.flatten(1)))
        return self.model(x + (h @ self.spread.T).view_as(x))


def brightness_thresholds(public_images: Tensor, bins: int) -> Tensor:
    """(bins,) ascending thresholds: the quantiles (i + 1) / (bins + 1), i < bins, of the mean brightness of the
    attacker's ``public_images`` (N, C, H, W), so that about as many images fall in each bin."""
    brightness = public_images.flatten(1).float().mean(dim=1)
    levels = torch.arange(1, bins + 1, dtype=torch.float64) / (bins + 1)
    return torch.quantile(brightness.double(), levels).float()


def recover_from_imprint(
    weight_grad: Tensor, bias_grad: Tensor, batch_size: int, image_shape: tuple[int, ...]
) -> Tensor:
    """The images (batch_size, C, H, W) the imprint gradients give: one per non-empty bin (the bin's image, or the
    weighted mean of its images), the bins with the largest |db| first when there are more than ``batch_size``, and
    zero images where fewer bins hold images than the batch has.

    Args:
        weight_grad: (k, D) dL/dW of the imprint block; bias_grad: (k,) dL/db.
    """
    next_weight = torch.cat([weight_grad[1:], torch.zeros_like(weight_grad[:1])])
    next_bias = torch.cat([bias_grad[1:], torch.zeros_like(bias_grad[:1])])
    weights, counts = (weight_grad - next_weight).double(), (bias_grad - next_bias).double()
    tolerance = 1e-6 * counts.abs().max().clamp_min(1e-30)
    filled = torch.nonzero(counts.abs() > tolerance).squeeze(1)
    filled = filled[counts[filled].abs().argsort(descending=True)][:batch_size]
    images = torch.zeros(batch_size, *image_shape, dtype=torch.float32, device=weight_grad.device)
    images[: len(filled)] = (weights[filled] / counts[filled, None]).float().view(len(filled), *image_shape)
    return images.clamp(0, 1)
