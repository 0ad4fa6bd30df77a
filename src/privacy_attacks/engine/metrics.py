"""Scores of reconstructed images (torchmetrics): SSIM, PSNR, MSE against references, per image."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure


def image_similarity(preds: Tensor, target: Tensor) -> dict[str, Tensor]:
    """Per-image ``ssim``, ``psnr`` (dB) and ``mse`` of ``preds`` vs ``target``, both (N, C, H, W) in [0, 1] -> (N,)."""
    preds, target = preds.float(), target.float()
    return {
        "ssim": structural_similarity_index_measure(preds, target, data_range=1.0, reduction="none"),
        "psnr": peak_signal_noise_ratio(preds, target, data_range=1.0, reduction="none", dim=(1, 2, 3)),
        "mse": (preds - target).pow(2).flatten(1).mean(dim=1),
    }


def class_means(images: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """Mean image of each class: (N, C, H, W), (N,) -> (num_classes, C, H, W)."""
    return torch.stack([images[labels == c].mean(dim=0) for c in range(num_classes)])


@torch.no_grad()
def nearest_ssim(preds: Tensor, labels: Tensor, images: Tensor, image_labels: Tensor, chunk: int = 4096) -> Tensor:
    """For each reconstruction, its SSIM to the most similar image of its class in ``images``: (N,)."""
    best = torch.full((len(preds),), -1.0)
    for i, (pred, label) in enumerate(zip(preds, labels.tolist())):
        pool = images[image_labels == label]
        for start in range(0, len(pool), chunk):
            part = pool[start : start + chunk]
            ssim = structural_similarity_index_measure(pred.expand_as(part), part, data_range=1.0, reduction="none")
            best[i] = max(best[i].item(), ssim.max().item())
    return best
