"""Score a batch reconstruction fairly: pair each reconstruction with an original by the best assignment.

A gradient is invariant to the order of the batch, so reconstruction i need not be original i.
The pairing minimising the total MSE (Hungarian algorithm, ``scipy.optimize.linear_sum_assignment``;
Kuhn 1955) is used before scoring, as in Geiping et al. 2020 and the ``breaching`` library.
"""

from __future__ import annotations

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor


def best_assignment(reconstructions: Tensor, originals: Tensor, allowed: Tensor | None = None) -> Tensor:
    """Index ``order`` (B,) long such that ``reconstructions[order[i]]`` is paired with ``originals[i]``.

    Args:
        reconstructions: (B, C, H, W); originals: (B, C, H, W). The total pixel MSE of the pairing is minimal.
        allowed: (B, B) bool, whether original i may pair with reconstruction j (e.g. the same label); None: any.
            At least one pairing must be allowed throughout.
    """
    cost = torch.cdist(originals.flatten(1).double(), reconstructions.flatten(1).double()).pow(2)
    if allowed is not None:
        cost = cost + 1e12 * (~allowed.to(cost.device)).double()
    rows, cols = linear_sum_assignment(cost.cpu().numpy())
    order = torch.empty(len(originals), dtype=torch.long)
    order[torch.as_tensor(rows)] = torch.as_tensor(cols, dtype=torch.long)
    return order.to(reconstructions.device)
