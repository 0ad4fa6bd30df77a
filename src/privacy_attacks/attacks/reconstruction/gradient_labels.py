"""Analytic label recovery from the last layer's gradient (iDLG: Zhao, Mopuri & Bilen 2020, "iDLG:
Improved Deep Leakage from Gradients"; batch counts in the spirit of Wainakh et al. 2022, "User-Level
Label Leakage from Gradients in Federated Learning").

For cross-entropy on softmax outputs p and a last linear layer z = W h + b, the gradient of one
sample's loss is dL/dW_c = (p_c - y_c) h. With non-negative features h (ReLU, sigmoid) only the
true class's row is negative, so the label is the row with the smallest sum.
"""

from __future__ import annotations

import torch
from torch import Tensor


def recover_labels(
    last_weight_grad: Tensor,
    batch_size: int,
    last_bias_grad: Tensor | None = None,
    reference_probs: Tensor | None = None,
) -> Tensor:
    """Labels of the client's batch from the gradient of the last linear layer.

    Args:
        last_weight_grad: dL/dW of the last layer, (C, D), loss averaged over the batch.
        batch_size: B, the number of labels to return.
        last_bias_grad: dL/db, (C,), if the layer has a bias: it equals mean_i (p_ic - y_ic) exactly.
        reference_probs: the attacker's estimate of mean_i p_ic, (C,) (e.g. the model's mean softmax
            on reference inputs, as LLG+ does); zeros if not given.

    Returns:
        (B,) long, sorted. Batch of one: exactly iDLG's argmin of the row sums. Larger batches:
        every class with a negative row (or bias) gradient appears at least once; the remaining
        B - K labels go greedily to the class whose gradient, minus the expected probability term,
        stays most negative after adding back the labels already given to it (each label of class c
        contributes -1/B to dL/db_c).
    """
    row_sums = last_weight_grad.sum(dim=1)
    if batch_size == 1:
        return row_sums.argmin().view(1)
    # Per-label impact: the bias gradient moves by 1/B per label; without a bias, by mean row-sum scale.
    signal = last_bias_grad if last_bias_grad is not None else row_sums / row_sums.abs().sum().clamp_min(1e-12)
    impact = 1.0 / batch_size if last_bias_grad is not None else 1.0 / batch_size / 2
    expected = reference_probs if reference_probs is not None and last_bias_grad is not None else torch.zeros_like(signal)
    present = (signal < 0).nonzero().flatten()
    if len(present) == 0:
        present = signal.argmin().view(1)
    present = present[signal[present].argsort()][:batch_size]
    counts = torch.zeros_like(signal, dtype=torch.long)
    counts[present] = 1
    for _ in range(batch_size - len(present)):
        counts[(signal + counts * impact - expected).argmin()] += 1
    return torch.repeat_interleave(torch.arange(len(signal), device=signal.device), counts)
