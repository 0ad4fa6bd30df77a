"""Pairing a batch's reconstructions with its originals by the best assignment."""

from __future__ import annotations

import torch

from privacy_attacks.attacks.gradient_inversion.assignment import best_assignment


def test_best_assignment_undoes_a_permutation():
    originals = torch.rand(5, 1, 28, 28)
    permutation = torch.tensor([3, 0, 4, 1, 2])
    reconstructions = (originals[permutation] + 0.01 * torch.randn(5, 1, 28, 28)).clamp(0, 1)
    order = best_assignment(reconstructions, originals)
    torch.testing.assert_close(reconstructions[order], originals, atol=0.05, rtol=0)
