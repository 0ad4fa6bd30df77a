"""Analytic label recovery from the last layer's gradient (iDLG: Zhao, Mopuri & Bilen 2020, "iDLG:
Improved Deep Leakage from Gradients"; batches as in Yin et al. 2021, "See through Gradients", and
Wainakh et al. 2022, "User-Level Label Leakage from Gradients in Federated Learning"; label counts from the
bias gradient as in Geng et al. 2021, "Towards General Deep Leakage in Federated Learning").

For cross-entropy on softmax outputs p and a last linear layer z = W h + b, the batch-mean gradient
is dL/dW_c = 1/B Σ_i (p_ic − y_ic) h_i and dL/db_c = 1/B Σ_i (p_ic − y_ic). With non-negative
features h (ReLU, sigmoid) the row of a class absent from the batch is ≥ 0 everywhere, while the
row of a present class has negative entries. For one sample only the true row is negative, so the
label is the row with the smallest sum (iDLG). Summed over the batch, B · dL/db_c = Σ_i p_ic − n_c: with the mean
probability p̄_c the attacker estimates on its own images, the count of class c is n_c ≈ B (p̄_c − dL/db_c)
(:func:`recover_label_counts`), exact for repeated labels where the model's outputs vary little between inputs
(an untrained network).
"""

from __future__ import annotations

import torch
from torch import Tensor


def recover_labels(last_weight_grad: Tensor, batch_size: int, last_bias_grad: Tensor | None = None) -> Tensor:
    """Labels of the client's batch from the gradient of the last linear layer.

    Args:
        last_weight_grad: dL/dW of the last layer, (C, D), loss averaged over the batch.
        batch_size: B, the number of labels to return.
        last_bias_grad: dL/db, (C,), if the layer has a bias.

    Returns:
        (B,) long, sorted. B = 1: iDLG's argmin of the row sums (exact for non-negative features).
        B > 1: the classes whose row has a negative entry are present (at most B of them, the most
        negative first; exact set for non-negative features unless a sample is predicted with
        certainty); the remaining labels are repeats, given greedily to the present class whose
        bias gradient plus the labels already given to it (1/B each) stays smallest (an estimate:
        it assumes similar mean probabilities p̄_c).
    """
    row_sums = last_weight_grad.sum(dim=1)
    if batch_size == 1:
        return row_sums.argmin().view(1)
    row_minima = last_weight_grad.amin(dim=1)
    present = (row_minima < 0).nonzero().flatten()
    present = present[row_minima[present].argsort()][:batch_size]
    if len(present) == 0:
        present = row_sums.argmin().view(1)
    signal = (
        last_bias_grad if last_bias_grad is not None else row_sums / last_weight_grad.abs().sum(dim=1).clamp_min(1e-12)
    )
    counts = torch.zeros(len(row_sums), dtype=torch.long, device=row_sums.device)
    counts[present] = 1
    for _ in range(batch_size - len(present)):
        score = signal[present] + counts[present] / batch_size
        counts[present[score.argmin()]] += 1
    return torch.repeat_interleave(torch.arange(len(row_sums), device=row_sums.device), counts)


def recover_label_counts(last_bias_grad: Tensor, batch_size: int, mean_probabilities: Tensor) -> Tensor:
    """Labels of the client's batch from the last layer's bias gradient and the model's mean output probabilities
    (Geng et al. 2021): n_c = B (p̄_c − dL/db_c), rounded to non-negative counts summing to B by the largest
    remainders.

    Args:
        last_bias_grad: dL/db of the last layer, (C,), loss averaged over the batch.
        batch_size: B, the number of labels to return.
        mean_probabilities: p̄, (C,), the model's softmax averaged over images the attacker holds (never the
            client's).

    Returns:
        (B,) long, sorted.
    """
    estimate = batch_size * (mean_probabilities.to(last_bias_grad) - last_bias_grad).double().clamp_min(0)
    counts = estimate.floor().long()
    remainders = estimate - counts
    while int(counts.sum()) < batch_size:  # the largest remainders first
        index = int(remainders.argmax())
        counts[index] += 1
        remainders[index] -= 1
    while int(counts.sum()) > batch_size:  # the smallest estimates of the classes counted
        index = int(torch.where(counts > 0, estimate - counts, torch.full_like(estimate, float("inf"))).argmin())
        counts[index] -= 1
    return torch.repeat_interleave(torch.arange(len(counts), device=counts.device), counts)
