"""Which pool images the attacker sends to the API: at random, or chosen in rounds by the student of the answers so far.

``query_strategy=random`` (the default) queries the first ``query_budget`` images of the seeded, shuffled pool. The
active strategies (ActiveThief, Pal et al. 2020, "ActiveThief: model extraction using active learning and
unannotated public data", AAAI) split the budget into ``active.rounds`` equal rounds: the first round is random; before
each later round a student is trained on the answers bought so far and ranks the candidates it has not queried:

- ``uncertainty``: the images it is least sure of, the smallest margin between its two highest probabilities;
- ``kcenter``: greedy k-center in its output space (the core-set choice of Sener & Savarese 2018, as ActiveThief
  uses it): each next image is the candidate farthest from every image already queried;
- ``adaptive``: Knockoff Nets' adaptive policy (Orekondy, Schiele & Fritz 2019, "Knockoff Nets: stealing functionality
  of black-box models", CVPR): a gradient bandit over groups of candidates learns, from the answers it buys, which
  groups pay. Its arms are the k-means clusters of the candidates in pixel space (the attacker's pool is unlabelled
  here, where Knockoff's arms are the pool's labels); each step samples arms from the policy's softmax, buys the next
  image of each, and rewards it by the answer's certainty (the margin of its top two probabilities), its diversity
  (the answer's excess over the mean answer so far) and the round student's loss on it, each standardised by its
  running statistics (:class:`Adaptive`).

Candidates are the first ``active.candidates`` images of the same shuffled pool (the attacker's unlabelled data: held,
not queried). Every query goes through the API and counts against the budget; the final student is trained on all
the answers exactly as the random strategy's is. Each strategy is a node under ``query_strategies`` in
``conf/attack/distillation.yaml`` (its ``_target_`` and constructor arguments; ``random`` is null: no rounds).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from privacy_attacks.blackbox import OutputMode
from privacy_attacks.errors import ConfigError, require_int, require_positive

Query = Callable[[Tensor], Tensor]  # candidate indices (k,) -> the API's answers for those images (k, ...)


class QueryStrategy(ABC):
    """Buys ``k`` of the candidates not yet queried in each round after the first.

    :meth:`prepare` sees every candidate once, before the first round; :meth:`observe` the first (random) round's
    answers; :meth:`buy` is called for each later round with the round student's probabilities.
    """

    def prepare(self, candidates: Tensor, mode: OutputMode, seed: int) -> None:
        """Called once with the candidates (M, C, H, W), the API's output mode and the strategy's own seed."""
        return None

    def observe(self, chosen: Tensor, answers: Tensor) -> None:
        """The answers (k, ...) the API gave for the candidates ``chosen`` (k,) outside :meth:`buy`."""
        return None

    @abstractmethod
    def buy(self, probs: Tensor, queried: Tensor, k: int, query: Query) -> tuple[Tensor, Tensor]:
        """Indices (k,) into the candidates, none of them ``queried``, and the API's answers for them.

        Args:
            probs: (M, C) the round student's probabilities on every candidate.
            queried: (M,) bool, the candidates already sent to the API.
            k: how many to buy (at most the candidates left).
            query: sends candidates (by index) to the API, every image counted against the budget.
        """


class RankingStrategy(QueryStrategy):
    """Picks the round's ``k`` candidates at once from the student's probabilities, then queries them."""

    def buy(self, probs: Tensor, queried: Tensor, k: int, query: Query) -> tuple[Tensor, Tensor]:
        chosen = self.select(probs, queried, k)
        return chosen, query(chosen)

    @abstractmethod
    def select(self, probs: Tensor, queried: Tensor, k: int) -> Tensor:
        """Indices (k,) into the candidates, none of them ``queried``.

        Args:
            probs: (M, C) the current student's probabilities on every candidate.
            queried: (M,) bool, the candidates already sent to the API.
            k: how many to pick (at most the candidates left).
        """


class Uncertainty(RankingStrategy):
    """The smallest margin between the student's two highest probabilities (margin sampling)."""

    def select(self, probs: Tensor, queried: Tensor, k: int) -> Tensor:
        top2 = probs.topk(2, dim=1).values
        margin = (top2[:, 0] - top2[:, 1]).masked_fill(queried, float("inf"))
        return margin.topk(k, largest=False).indices


class KCenter(RankingStrategy):
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


def kmeans(points: Tensor, clusters: int, generator: torch.Generator, iterations: int = 20) -> Tensor:
    """Lloyd's k-means on ``points`` (M, D) from ``clusters`` distinct points drawn by ``generator``: labels (M,)."""
    centres = points[torch.randperm(len(points), generator=generator)[:clusters]].clone()
    labels = torch.zeros(len(points), dtype=torch.long)
    for _ in range(iterations):
        labels = torch.cdist(points, centres).argmin(dim=1)
        for cluster in range(clusters):
            members = labels == cluster
            if members.any():
                centres[cluster] = points[members].mean(dim=0)
    return labels


class RunningStandardiser:
    """Standardises each column of rewards (N, R) by the mean and deviation of every row seen so far, these included."""

    def __init__(self, columns: int) -> None:
        self.count, self.total, self.squares = 0, torch.zeros(columns), torch.zeros(columns)

    def __call__(self, rewards: Tensor) -> Tensor:
        self.count += len(rewards)
        self.total += rewards.sum(0)
        self.squares += rewards.pow(2).sum(0)
        mean = self.total / self.count
        std = (self.squares / self.count - mean.pow(2)).clamp_min(0).sqrt()
        return (rewards - mean) / std.clamp_min(1e-8)


class Adaptive(QueryStrategy):
    """Knockoff Nets' adaptive policy (Orekondy et al. 2019, Sec. 4.1.2) over k-means clusters of the candidates.

    A gradient bandit (Sutton & Barto, Sec. 2.8): preferences H (K,), policy pi = softmax(H). Each step samples
    ``batch`` arms from pi, buys the next unqueried image of each (its cluster's candidates in a seeded order), and
    rewards image t with r_t = sum of the chosen standardised rewards of its answer y_t (probabilities, C):

    - ``certainty``: y_t,(1) - y_t,(2), the margin of its two highest probabilities;
    - ``diversity``: sum_c max(0, y_t,c - mean_c y), the excess over the mean answer bought so far;
    - ``loss``: -sum_c y_t,c log s_t,c, the cross-entropy of the round student's probabilities s_t against it.

    Then H <- H + lr * mean_t (r_t - r_bar) (onehot(a_t) - pi), r_bar the mean reward of the earlier steps. Arms
    whose candidates are all bought leave the policy.
    """

    REWARDS = ("certainty", "diversity", "loss")

    def __init__(self, clusters: int, batch: int, lr: float, rewards: Sequence[str]) -> None:
        prefix = "query_strategies.adaptive"  # its settings' keys: refused before any work (the attack builds it first)
        require_int(clusters, f"{prefix}.clusters")
        require_int(batch, f"{prefix}.batch")
        require_positive(lr, f"{prefix}.lr")
        unknown = [name for name in rewards if name not in self.REWARDS]
        if not rewards or unknown:
            raise ConfigError(
                f"{prefix}.rewards={list(rewards)} is not allowed: name one or more of {', '.join(self.REWARDS)}."
            )
        self.clusters, self.batch, self.lr, self.rewards = int(clusters), int(batch), float(lr), list(rewards)
        self.preferences = torch.zeros(self.clusters)
        self.standardise = RunningStandardiser(len(self.rewards))
        self.reward_total, self.reward_count = 0.0, 0
        self.answer_total: Tensor | None = None
        self.answer_count = 0

    def prepare(self, candidates: Tensor, mode: OutputMode, seed: int) -> None:
        self.mode = mode
        self.generator = torch.Generator().manual_seed(seed)
        self.clusters = min(self.clusters, len(candidates))
        self.preferences = torch.zeros(self.clusters)
        labels = kmeans(candidates.flatten(1).float(), self.clusters, self.generator)
        order = torch.randperm(len(candidates), generator=self.generator)
        self.queues = [order[labels[order] == cluster] for cluster in range(self.clusters)]
        self.cursors = [0] * self.clusters

    def answer_probs(self, answers: Tensor) -> Tensor:
        """The answered class distributions (k, C)."""
        return self.mode.scores(answers).float().softmax(dim=-1)

    def observe(self, chosen: Tensor, answers: Tensor) -> None:
        probs = self.answer_probs(answers)
        self.answer_total = probs.sum(0) if self.answer_total is None else self.answer_total + probs.sum(0)
        self.answer_count += len(probs)

    def next_of(self, cluster: int, queried: Tensor) -> int | None:
        """The cluster's next candidate not yet queried (its cursor moved past it), or None when none is left."""
        queue = self.queues[cluster]
        while self.cursors[cluster] < len(queue):
            index = int(queue[self.cursors[cluster]])
            self.cursors[cluster] += 1
            if not queried[index]:
                return index
        return None

    def reward_columns(self, answers: Tensor, student: Tensor) -> Tensor:
        """Raw rewards (k, R) of answer probabilities (k, C) given the student's (k, C), in ``rewards``' order."""
        columns = []
        for name in self.rewards:
            if name == "certainty":
                top2 = answers.topk(2, dim=1).values
                columns.append(top2[:, 0] - top2[:, 1])
            elif name == "diversity":
                mean = self.answer_total / self.answer_count if self.answer_count else torch.zeros_like(answers[0])
                columns.append((answers - mean).clamp_min(0).sum(1))
            else:
                columns.append(-(answers * student.clamp_min(1e-12).log()).sum(1))
        return torch.stack(columns, dim=1)

    def buy(self, probs: Tensor, queried: Tensor, k: int, query: Query) -> tuple[Tensor, Tensor]:
        queried = queried.clone()
        live = torch.tensor([self.cursors[c] < len(self.queues[c]) for c in range(self.clusters)])
        chosen_all, answers_all = [], []
        bought = 0
        while bought < k:
            step = min(self.batch, k - bought)
            arms, chosen = [], []
            while len(chosen) < step:
                policy = self.preferences.masked_fill(~live, float("-inf")).softmax(0)
                arm = int(torch.multinomial(policy, 1, generator=self.generator))
                index = self.next_of(arm, queried)
                if index is None:
                    live[arm] = False
                    continue
                queried[index] = True
                arms.append(arm)
                chosen.append(index)
            chosen = torch.tensor(chosen, dtype=torch.long)
            answers = query(chosen)
            answered = self.answer_probs(answers)
            raw = self.reward_columns(answered, probs[chosen].float())
            reward = self.standardise(raw).sum(1)
            baseline = self.reward_total / self.reward_count if self.reward_count else 0.0
            policy = self.preferences.masked_fill(~live, float("-inf")).softmax(0)
            onehot = torch.nn.functional.one_hot(torch.tensor(arms), self.clusters).float()
            self.preferences += self.lr * ((reward - baseline)[:, None] * (onehot - policy)).mean(0)
            self.reward_total += float(reward.sum())
            self.reward_count += len(reward)
            self.observe(chosen, answers)
            chosen_all.append(chosen)
            answers_all.append(answers)
            bought += step
        return torch.cat(chosen_all), torch.cat(answers_all)


def round_sizes(budget: int, rounds: int) -> list[int]:
    """``budget`` split into ``rounds`` near-equal rounds (the first ones larger by one), none empty."""
    rounds = min(rounds, budget)
    return [budget // rounds + (1 if r < budget % rounds else 0) for r in range(rounds)]
