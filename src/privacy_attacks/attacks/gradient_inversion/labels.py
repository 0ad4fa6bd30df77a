"""Analytic label recovery from the last layer's gradient (iDLG: Zhao, Mopuri & Bilen 2020, "iDLG:
Improved Deep Leakage from Gradients"; batches as in Yin et al. 2021, "See through Gradients", and
Wainakh et al. 2022, "User-Level Label Leakage from Gradients in Federated Learning").

For cross-entropy on softmax outputs p and a last linear layer z = W h + b, the batch-mean gradient
is dL/dW_c = 1/B Σ_i (p_ic − y_ic) h_i and dL/db_c = 1/B Σ_i (p_ic − y_ic). With non-negative
features h (ReLU, sigmoid) the row of a class absent from the batch is ≥ 0 everywhere, while the
row of a present class has negative entries. For one sample only the true row is negative, so the
label is the row with the smallest sum (iDLG).
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
