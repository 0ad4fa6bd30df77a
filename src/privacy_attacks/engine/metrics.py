"""Scores of reconstructed images (torchmetrics): SSIM, PSNR, MSE against references, per image."""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from privacy_attacks.batched import in_batches

# The highest PSNR reported (dB): float32 images equal to ~1e-5 already score about 100.
PSNR_CAP = 100.0

log = logging.getLogger(__name__)


def image_similarity(preds: Tensor, target: Tensor) -> dict[str, Tensor]:
    """Per-image ``ssim``, ``psnr`` (dB, capped at :data:`PSNR_CAP`: an exact copy would be infinite) and ``mse`` of
    ``preds`` vs ``target``, both (N, C, H, W) in [0, 1] -> (N,)."""
    preds, target = preds.float(), target.float()
    psnr = peak_signal_noise_ratio(preds, target, data_range=1.0, reduction="none", dim=(1, 2, 3))
    return {
        "ssim": structural_similarity_index_measure(preds, target, data_range=1.0, reduction="none"),
        "psnr": psnr.clamp(max=PSNR_CAP),
        "mse": (preds - target).pow(2).flatten(1).mean(dim=1),
    }


def class_means(images: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """Mean image of each class: (N, C, H, W), (N,) -> (num_classes, C, H, W); NaN for a class without an image."""
    return torch.stack([images[labels == c].mean(dim=0) for c in range(num_classes)])


# SSIM's window as torchmetrics' default: a Gaussian of σ = 1.5 over 11 pixels, the image reflected at its borders.
SSIM_SIGMA, SSIM_WINDOW, SSIM_C1, SSIM_C2 = 1.5, 11, 0.01**2, 0.03**2


def _ssim_window(size: int) -> Tensor:
    """The Gaussian window as a banded (size, size + K - 1) matrix: row i weighs the reflected image's pixels
    i .. i + K - 1, so that ``G_h @ x @ G_w.T`` is the 2-D window applied at every pixel."""
    offsets = torch.arange(SSIM_WINDOW, dtype=torch.float32) - (SSIM_WINDOW - 1) / 2
    gauss = torch.exp(-((offsets / SSIM_SIGMA) ** 2) / 2)
    gauss = gauss / gauss.sum()
    band = torch.zeros(size, size + SSIM_WINDOW - 1)
    for i in range(size):
        band[i, i : i + SSIM_WINDOW] = gauss
    return band


def _local_means(padded: Tensor, window: tuple[Tensor, Tensor]) -> Tensor:
    """Gaussian-weighted local means of reflected images (B, C, H + K - 1, W + K - 1) -> (B, C, H, W)."""
    rows, columns = window
    return rows @ padded @ columns.T


@torch.no_grad()
def nearest_ssim(preds: Tensor, labels: Tensor, images: Tensor, image_labels: Tensor, chunk: int = 4096) -> Tensor:
    """For each reconstruction (N, C, H, W), its SSIM (torchmetrics' definition, data range 1) to the most similar
    image of its class in ``images`` (M, C, H, W): (N,). Exact and fast enough for thousands of reconstructions: each
    class's local means and second moments are computed once, each pair needs only its cross moment, and the 11 x 11
    Gaussian window is applied as two banded matrix products."""
    preds, images = preds.float(), images.float()
    pad = (SSIM_WINDOW - 1) // 2
    window = _ssim_window(preds.shape[2]).to(preds.device), _ssim_window(preds.shape[3]).to(preds.device)
    best = torch.full((len(preds),), -1.0)  # on the CPU, as returned

    def reflected(x: Tensor) -> Tensor:
        return F.pad(x, (pad, pad, pad, pad), mode="reflect")

    for label in labels.unique().tolist():
        pool = reflected(images[image_labels == label])
        if len(pool) == 0:
            continue
        mu_pool = _local_means(pool, window)
        var_pool = (_local_means(pool * pool, window) - mu_pool**2).clamp_min(0)
        for i in (labels == label).nonzero().flatten().tolist():
            x = reflected(preds[i : i + 1])
            mu_x = _local_means(x, window)
            var_x = (_local_means(x * x, window) - mu_x**2).clamp_min(0)
            for start in range(0, len(pool), chunk):
                mu_y, var_y = mu_pool[start : start + chunk], var_pool[start : start + chunk]
                cov = _local_means(x * pool[start : start + chunk], window) - mu_x * mu_y
                ssim = ((2 * mu_x * mu_y + SSIM_C1) * (2 * cov + SSIM_C2)) / (
                    (mu_x**2 + mu_y**2 + SSIM_C1) * (var_x + var_y + SSIM_C2)
                )
                best[i] = max(best[i].item(), ssim.flatten(1).mean(dim=1).max().item())
    return best


@torch.no_grad()
def nearest_distance(
    preds: Tensor,
    labels: Tensor,
    images: Tensor,
    image_labels: Tensor,
    embed: Callable[[Tensor], Tensor] | None = None,
    chunk: int = 2048,
    image_features: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """For each reconstruction (N, C, H, W) of ``labels`` (N,), the L2 distance to the nearest image of its class in
    ``images`` (M, C, H, W) of ``image_labels`` (M,), in pixel space or, with ``embed`` ((K, C, H, W) -> (K, D)), in
    that feature space (the "KNN distance" of model-inversion papers, e.g. Zhang et al. 2020); ``image_features``
    (M, D), the images already embedded (:func:`embedded_pool`), saves embedding them again. Computed where ``preds``
    are (a GPU: one pass over the pool); returns the distances (N,) and the nearest images' positions in ``images``
    (N,), on the CPU."""
    embed = embed or (lambda x: x.flatten(1))
    features = embed(preds.float()).flatten(1)
    best = torch.full((len(preds),), float("inf"), device=features.device)
    where = torch.zeros(len(preds), dtype=torch.long, device=features.device)
    for start in range(0, len(images), chunk):
        part_labels = image_labels[start : start + chunk].to(labels.device)
        if image_features is None:
            part = embed(images[start : start + chunk].to(preds.device).float()).flatten(1)
        else:
            part = image_features[start : start + chunk].to(preds.device)
        distances = torch.cdist(features, part)  # (N, chunk)
        distances = distances.masked_fill(labels[:, None] != part_labels[None, :], float("inf"))
        value, index = distances.min(dim=1)
        better = value < best
        best, where = torch.where(better, value, best), torch.where(better, index + start, where)
    return best.cpu(), where.cpu()


_EMBEDDED: dict[Hashable, Tensor] = {}


@torch.no_grad()
def embedded_pool(images: Tensor, embed: Callable[[Tensor], Tensor], key: Hashable, chunk: int = 2048) -> Tensor:
    """``embed`` of every image (M, C, H, W) -> (M, D), in chunks of ``chunk`` as :func:`nearest_distance` embeds
    them (the same numbers). The last pool embedded stays in memory under ``key`` (say, the embedding network's and
    the images' digests), so the jobs of a sweep run in one process embed it once: the reporting judge's features
    of 55,000 training images cost a CPU job tens of seconds."""
    if key not in _EMBEDDED:
        _EMBEDDED.clear()  # one pool at a time: its features can take a gigabyte or more
        log.info(
            "Embedding the %d private images once for the nearest-image distances (kept for the sweep).", len(images)
        )
        _EMBEDDED[key] = in_batches(lambda part: embed(part.float()).flatten(1), images, batch_size=chunk, out=None)
    return _EMBEDDED[key]


def penultimate_features(net: nn.Module) -> Callable[[Tensor], Tensor]:
    """``images -> (N, D)``: the input of ``net``'s last linear or convolutional layer, flattened (its penultimate
    representation, whatever the architecture), computed in eval mode without gradients."""
    last = [module for module in net.modules() if isinstance(module, (nn.Linear, nn.Conv2d))][-1]

    @torch.no_grad()
    def features(images: Tensor) -> Tensor:
        captured: list[Tensor] = []
        handle = last.register_forward_hook(lambda _m, inputs, _o: captured.append(inputs[0]))
        try:
            net.eval()(images)
        finally:
            handle.remove()
        return captured[0].flatten(1)

    return features
