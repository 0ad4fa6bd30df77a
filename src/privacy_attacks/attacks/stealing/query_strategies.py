"""Which pool images the attacker sends to the API: at random, or chosen in rounds by the student of the answers so far.

``query_strategy=random`` (the default) queries the first ``query_budget`` images of the seeded, shuffled pool. The
active strategies (ActiveThief, Pal et al. 2020, "ActiveThief: model extraction using active learning and
unannotated public data", AAAI) split the budget into ``active.rounds`` equal rounds: the first round is random; before
each later round a student is trained on the answers bought so far and ranks the candidates it has not queried:

- ``uncertainty``: the images it is least sure of, the smallest margin between its two highest probabilities;
- ``kcenter``: greedy k-center in its output space (the core-set choice of Sener & Savarese 2018, as ActiveThief
  uses it): each next image is the candidate farthest from every image already queried.

Candidates are the first ``active.candidates`` images of the same shuffled pool (the attacker's unlabelled data: held,
not queried). Every query goes through the API and counts against the budget; the final student is trained on all
the answers exactly as the random strategy's is.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor


class QueryStrategy(ABC):
    """Picks ``k`` of the candidates not yet queried from the current student's probabilities."""

    @abstractmethod
    def select(self, probs: Tensor, queried: Tensor, k: int) -> Tensor:
        """Indices (k,) into the candidates, none of them ``queried``.

        Args:
            probs: (M, C) the current student's probabilities on every candidate.
            queried: (M,) bool, the candidates already sent to the API.
            k: how many to pick (at most the candidates left).
        """


class Uncertainty(QueryStrategy):
    """The smallest margin between the student's two highest probabilities (margin sampling)."""

    def select(self, probs: Tensor, queried: Tensor, k: int) -> Tensor:
        top2 = probs.topk(2, dim=1).values
        margin = (top2[:, 0] - top2[:, 1]).masked_fill(queried, float("inf"))
        return margin.topk(k, largest=False).indices


class KCenter(QueryStrategy):
    """Greedy k-center in the student's probability space: farthest from the nearest queried candidate, k times."""

    def select(self, probs: Tensor, queried: Tensor, k: int) -> Tensor:
        probs = probs.float()
        if queried.any():
            nearest = torch.cdist(probs, probs[queried]).min(dim=1).values
        else:
            nearest = torch.full((len(probs),), float("inf"))
        nearest = nearest.masked_fill(queried, float("-inf"))
        chosen = []
        for _ in range(k):
            index = int(nearest.argmax())
            chosen.append(index)
            nearest = torch.minimum(nearest, (probs - probs[index]).norm(dim=1))
            nearest[index] = float("-inf")
        return torch.tensor(chosen, dtype=torch.long)


STRATEGIES: dict[str, type[QueryStrategy] | None] = {"random": None, "uncertainty": Uncertainty, "kcenter": KCenter}


def round_sizes(budget: int, rounds: int) -> list[int]:
    """``budget`` split into ``rounds`` near-equal rounds (the first ones larger by one), none empty."""
    rounds = min(rounds, budget)
    return [budget // rounds + (1 if r < budget % rounds else 0) for r in range(rounds)]
