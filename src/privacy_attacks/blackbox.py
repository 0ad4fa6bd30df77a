"""The black-box query API: all an attacker holds of a deployed classifier.

The lecture's black-box setting ("黑盒攻击：攻击者只能查询模型API"; Tramèr et al. 2016,
"Stealing machine learning models via prediction APIs"): the attacker sends images and gets
back what the service returns, nothing else. :class:`BlackBoxAPI` wraps a frozen network so that

- ``query(x)`` answers a batch ``x`` of images (N, C, H, W) of the shape the network takes (MNIST's
  (N, 1, 28, 28)), pixels in [0, 1], in the service's output mode (:data:`OUTPUT_MODES`, chosen by the
  config key ``api.output``):

  ========== ============================ =================================================
  mode       answer                       note
  ========== ============================ =================================================
  probs      float (N, C), rows sum to 1  softmax of the logits (the default)
  logits     float (N, C)                 raw scores
  label      long (N,)                    top-1 class only
  rounded    float (N, C)                 probabilities rounded to ``decimals`` decimals
  ========== ============================ =================================================

- every image answered is counted (``api.queries_used``, exact, per image not per call), and a
  query that would go past ``budget`` is refused whole with :class:`QueryBudgetExceeded`
  before the network runs (nothing of it is answered or counted);
- answers come back on the device of the queries, wherever the network runs;
- answers are computed under ``torch.no_grad()`` and are plain tensors detached from any graph:
  no gradient reaches the caller and ``x.grad`` is never filled;
- the wrapped network is not reachable through the public interface: the API is not an
  ``nn.Module``, has no ``parameters()``/``state_dict()``, and keeps the network in a closure.

Example:
    >>> api = BlackBoxAPI(target.net, output="probs", budget=1000)
    >>> answers = api.query(images[:100])   # (100, 10) probabilities
    >>> api.queries_used, api.queries_left
    (100, 900)

Output modes are small objects (``_target_`` nodes in the attack config) that turn the target's
logits into the answer (:meth:`OutputMode.answer`) and give attackers two views of an answer:
:meth:`OutputMode.student_view` (a student's logits mapped into the answer's space, for the
lecture's MSE loss, compared with :meth:`OutputMode.target_view` of the answers) and :meth:`OutputMode.scores`
(logit-form scores whose softmax is the answer's class distribution, for KL-type losses).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from privacy_attacks.batched import in_batches, net_device
from privacy_attacks.errors import UserError, require_choice, require_int

# Floor under probabilities before taking logs (a float32 softmax can underflow to exactly 0).
PROB_FLOOR = 1e-30


def defended_logits(logits: Tensor, defense: Callable[[Tensor], Tensor] | None) -> Tensor:
    """Logits (..., C) whose softmax is ``defense``'s post-processing of ``softmax(logits)`` (floored at
    :data:`PROB_FLOOR` before the log): what an output mode reads behind a defended API; ``logits`` itself for no
    ``defense``."""
    if defense is None:
        return logits
    return defense(logits.softmax(dim=-1)).clamp_min(PROB_FLOOR).log()


class QueryBudgetExceeded(UserError):
    """A query would take the number of images answered past the API's budget."""


class OutputMode:
    """What the service returns for a batch of target logits (N, C).

    Subclasses define :meth:`answer`; :meth:`student_view` and :meth:`scores` give the
    attacker's views of answers (see the module docstring).
    """

    name = "base"

    def answer(self, logits: Tensor) -> Tensor:
        """The service's answer for target logits (N, C)."""
        raise NotImplementedError

    def student_view(self, logits: Tensor) -> Tensor:
        """A student's logits (N, C) mapped into the space of the answers (probabilities by default)."""
        return logits.softmax(dim=-1)

    def target_view(self, answers: Tensor) -> Tensor:
        """Answers as float (N, C) in the space of :meth:`student_view` (one-hot for labels)."""
        return answers

    def scores(self, answers: Tensor) -> Tensor:
        """Logit-form scores (N, C) of answers: ``softmax(scores)`` is the answered class distribution.

        For probabilities this is ``log p`` (softmax is shift-invariant, so
        ``softmax(log p / tau) == softmax(z / tau)`` for the target's logits ``z``).
        """
        return answers.clamp_min(PROB_FLOOR).log()

    def labels(self, answers: Tensor) -> Tensor:
        """Top-1 classes (N,) of answers."""
        return answers.argmax(dim=-1)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Probabilities(OutputMode):
    """``probs``: the softmax probabilities (N, C)."""

    name = "probs"

    def answer(self, logits: Tensor) -> Tensor:
        return logits.softmax(dim=-1)


class Logits(OutputMode):
    """``logits``: the raw scores (N, C); the student is compared on its own logits."""

    name = "logits"

    def answer(self, logits: Tensor) -> Tensor:
        return logits.clone()

    def student_view(self, logits: Tensor) -> Tensor:
        return logits

    def scores(self, answers: Tensor) -> Tensor:
        return answers


class Label(OutputMode):
    """``label``: the top-1 class only, long (N,).

    Its class distribution is one-hot; ``student_view`` stays the student's probabilities, so the
    MSE loss compares them with the one-hot answer.
    """

    name = "label"

    def __init__(self, num_classes: int = 10):
        self.num_classes = num_classes

    def answer(self, logits: Tensor) -> Tensor:
        return logits.argmax(dim=-1)

    def target_view(self, answers: Tensor) -> Tensor:
        return F.one_hot(answers, self.num_classes).float()

    def scores(self, answers: Tensor) -> Tensor:
        return super().scores(self.target_view(answers))

    def labels(self, answers: Tensor) -> Tensor:
        return answers

    def __repr__(self) -> str:
        return f"Label(num_classes={self.num_classes})"


class RoundedProbabilities(OutputMode):
    """``rounded``: probabilities rounded to ``decimals`` decimals (a common API defence).

    Rows need not sum to 1 and small probabilities become 0; :meth:`scores` renormalises.
    """

    name = "rounded"

    def __init__(self, decimals: int = 2):
        require_int(decimals, "api.decimals", minimum=0)
        self.decimals = decimals

    def answer(self, logits: Tensor) -> Tensor:
        return logits.softmax(dim=-1).round(decimals=self.decimals)

    def scores(self, answers: Tensor) -> Tensor:
        total = answers.sum(dim=-1, keepdim=True).clamp_min(PROB_FLOOR)
        return super().scores(answers / total)

    def __repr__(self) -> str:
        return f"RoundedProbabilities(decimals={self.decimals})"


# The default modes by name (the attack configs declare the same mapping as `_target_` nodes).
OUTPUT_MODES: dict[str, Callable[[], OutputMode]] = {
    "probs": Probabilities,
    "logits": Logits,
    "label": Label,
    "rounded": RoundedProbabilities,
}


def output_mode(name: str | OutputMode, modes: Mapping[str, Callable[[], OutputMode]] | None = None) -> OutputMode:
    """The output mode called ``name`` (an :class:`OutputMode` passes through); :class:`ConfigError` listing the
    choices."""
    if isinstance(name, OutputMode):
        return name
    modes = OUTPUT_MODES if modes is None else modes
    require_choice(name, modes, "api.output")
    return modes[name]()


class BlackBoxAPI:
    """A deployed classifier behind a query API with a budget.

    Args:
        net: the frozen target, (N, C, H, W) pixels in [0, 1] -> logits (N, classes). It is kept in a
            closure, never as an attribute.
        output: an output mode name (``probs``, ``logits``, ``label``, ``rounded``) or an
            :class:`OutputMode` object (e.g. ``RoundedProbabilities(decimals=3)``).
        budget: the most images the API answers in total (None: unlimited).
        batch_size: images sent through the network at a time (memory only; counting is per image).
        defense: an output defence (:mod:`privacy_attacks.defenses.api`) that post-processes the target's class
            probabilities before the output mode reads them (``logits`` then answers their logarithm); None: none.

    Attributes (read-only): ``output`` (the :class:`OutputMode`), ``budget``, ``queries_used``,
    ``queries_left``, ``num_calls``.
    """

    __slots__ = ("_answer", "_output", "_budget", "_used", "_calls")

    def __init__(
        self,
        net: nn.Module,
        output: str | OutputMode = "probs",
        budget: int | None = None,
        batch_size: int = 2000,
        defense: Callable[[Tensor], Tensor] | None = None,
    ):
        if budget is not None:
            require_int(budget, "query_budget")
        require_int(batch_size, "api.batch_size")
        mode = output_mode(output)
        net.eval()

        @torch.no_grad()
        def answer(x: Tensor) -> Tensor:
            # Asked each time: a Lightning fit in between may have moved the network (its teardown moves to the CPU).
            return in_batches(
                lambda chunk: mode.answer(defended_logits(net(chunk).float(), defense)),
                x,
                batch_size=batch_size,
                device=net_device(net),
                out=x.device,
            )

        self._answer, self._output, self._budget, self._used, self._calls = answer, mode, budget, 0, 0

    @property
    def output(self) -> OutputMode:
        return self._output

    @property
    def budget(self) -> int | None:
        return self._budget

    @property
    def queries_used(self) -> int:
        """Images answered so far (each image of each call counts once)."""
        return self._used

    @property
    def queries_left(self) -> int | float:
        """Images the budget still allows (``math.inf`` without a budget)."""
        return math.inf if self._budget is None else self._budget - self._used

    @property
    def num_calls(self) -> int:
        """Calls of :meth:`query` answered so far."""
        return self._calls

    def query(self, x: Tensor) -> Tensor:
        """Answer a batch of images ``x`` (N, C, H, W) in [0, 1] in the API's output mode.

        Counts N images; raises :class:`QueryBudgetExceeded` (nothing answered, nothing counted)
        when N is more than the budget has left. The answer carries no gradient.
        """
        if not isinstance(x, Tensor) or x.dim() != 4:
            raise ValueError(
                "query expects an image batch of shape (N, C, H, W) (MNIST's: (N, 1, 28, 28)), got "
                f"{getattr(x, 'shape', type(x))}."
            )
        n = len(x)
        if n > self.queries_left:
            raise QueryBudgetExceeded(
                f"Query of {n} images refused: the budget is {self._budget} images and {self._used} were already "
                f"answered ({self.queries_left} left). Raise query_budget to query more."
            )
        answers = self._answer(x.detach())
        self._used += n
        self._calls += 1
        return answers

    __call__ = query

    def __repr__(self) -> str:
        return f"BlackBoxAPI(output={self._output!r}, budget={self._budget}, queries_used={self._used})"

    def __getstate__(self):  # no pickling: a pickled API would carry the network's weights
        raise TypeError("BlackBoxAPI cannot be pickled (it would expose the target's weights).")
