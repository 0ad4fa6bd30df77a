"""``python attack.py attack=audit``: the one-run canary audit of Steinke, Nasr & Jagielski 2023, "Privacy Auditing
with One (1) Training Run" (NeurIPS): a 95% lower bound on the ε of the target's training recipe from one run.

Why an attack of its own and not a membership ``method``: a membership method infers who is in a target trained
without it, through the black-box API, on the evaluation sets; the audit decides what the target trains on (its
canaries, each IN by a coin) and so needs a target of its own, trained once per canary set. Its config names the
function that provisions that target (``attack.provision``): the pipeline trains and caches it like any target
and reports its recipe's numbers (``target/test_acc``, and under ``defense=dpsgd`` the accountant's
``target/privacy/epsilon``) beside the audit's bound.

1. :func:`~.canaries.draw_canaries`: ``canaries`` = m images of the configured dataset (``data=``) the recipe never
   trains on (mislabelled for ``canary_kind=mislabelled``: a wrong class among the data's), each IN with
   probability ½ by the audit's seed (``canary_kind=crafted``: m images the auditor crafts, :mod:`.crafted`);
2. :func:`~.canaries.provision_canary_target`: the target recipe trains once on its members + the IN canaries;
3. every canary is scored on the trained model by ``score`` (a key of the membership scores, higher = IN; ``loss``:
   log-probability of the canary's label) with the canary's label;
4. the ``guesses_in`` highest are guessed IN and the ``guesses_out`` lowest OUT, the rest abstained on; both counts
   are fixed in the config before the run, so the bound needs no correction for a choice among several;
5. :func:`~.bound.epsilon_lower_bound` of r = guesses_in + guesses_out guesses with v right, at ``audit_delta`` and
   ``confidence``: ``audit/canary_epsilon_lb``.

``canary_kind=dirac`` is the white-box audit (:mod:`.dirac`): the canaries are gradients inserted into DP-SGD's
clipped sums (steps 1-2), and step 3 scores each by what the auditor observed while the target trained
(``observation``: every iterate, read by ``dirac_score``, or the last), not by the trained model's answers.
Each kind is a :class:`~.canaries.CanaryKind` (its check, its target, its scores) and a node under
``canary_kinds``.
"""

from __future__ import annotations

import logging
import time

import torch
from omegaconf import DictConfig
from torch import Tensor

from privacy_attacks.attacks.membership.metrics import mann_whitney_auc
from privacy_attacks.attacks.membership.scores import chosen_score
from privacy_attacks.data.identity import training_set_size
from privacy_attacks.errors import ConfigError, require_choice, require_int
from privacy_attacks.harness import build_loggers, finish_loggers
from privacy_attacks.io import output_dir
from privacy_attacks.targets import Target

from .bound import epsilon_lower_bound
from .canaries import canary_kind
from .dirac import DIRAC_SCORES, OBSERVATIONS

log = logging.getLogger(__name__)
IN, OUT, ABSTAIN = 1, -1, 0


def validate(cfg: DictConfig, total: int | None = None) -> None:
    """:class:`ConfigError` before any work for a canary count that is not positive or larger than the images the
    target never trains on, guess counts that are negative, zero in all or more than the canaries, an unknown
    ``canary_kind``, ``score``, ``observation`` or ``dirac_score``, or a confidence or δ out of range; then the
    kind's own check (:meth:`~.canaries.CanaryKind.check`): Dirac canaries without DP-SGD or beyond the network's
    parameter count, crafted canaries with a ``craft.pixels`` outside (0, 1], negative ``craft.steps`` or a
    ``craft.lr`` that is not positive. ``total``: the training set's size (None: the configured dataset's)."""
    require_int(cfg.canaries, "canaries")
    kind = canary_kind(cfg)  # (an unknown name, before the other checks)
    chosen_score(cfg.scores, cfg.score, "score")
    require_choice(cfg.observation, OBSERVATIONS, "observation")
    require_choice(cfg.dirac_score, DIRAC_SCORES, "dirac_score")
    require_int(cfg.guesses_in, "guesses_in", minimum=0)
    require_int(cfg.guesses_out, "guesses_out", minimum=0)
    guesses = cfg.guesses_in + cfg.guesses_out
    if not 1 <= guesses <= cfg.canaries:
        raise ConfigError(
            f"guesses_in + guesses_out = {guesses} is not allowed: the audit guesses on between 1 and "
            f"canaries={cfg.canaries} canaries (it abstains on the rest)."
        )
    confidence, delta = cfg.confidence, cfg.audit_delta
    if not isinstance(confidence, float) or not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence={confidence!r} is not allowed: it must be a number in (0, 1).")
    if not isinstance(delta, (int, float)) or isinstance(delta, bool) or not 0.0 <= delta < 1.0:
        raise ConfigError(f"audit_delta={delta!r} is not allowed: it must be a number in [0, 1).")
    kind.check(cfg, total)


def guess(scores: Tensor, guesses_in: int, guesses_out: int) -> Tensor:
    """Guesses (m,) in {1 (IN), -1 (OUT), 0 (abstain)}: IN for the ``guesses_in`` highest of ``scores`` (m,), OUT for
    the ``guesses_out`` lowest. Ties are broken by position (the canaries are in a random order)."""
    if guesses_in + guesses_out > len(scores):
        raise ConfigError(f"{guesses_in} + {guesses_out} guesses on only {len(scores)} canaries.")
    order = torch.sort(scores, descending=True, stable=True).indices
    guesses = torch.full((len(scores),), ABSTAIN, dtype=torch.long)
    guesses[order[:guesses_in]] = IN
    guesses[order[len(scores) - guesses_out :]] = OUT
    return guesses


def run(cfg: DictConfig, target: Target) -> dict[str, float]:
    """Score the canaries on ``target`` (the canary target of ``attack.provision``) and return ``audit/*``."""
    start = time.perf_counter()
    validate(cfg, total=training_set_size(cfg.data))
    scores, included, positions, extra = canary_kind(cfg).scores(cfg, target)
    guesses = guess(scores, int(cfg.guesses_in), int(cfg.guesses_out))
    truth = torch.where(included, IN, OUT)
    m, r, v = len(scores), int((guesses != ABSTAIN).sum()), int((guesses == truth).sum())
    epsilon = epsilon_lower_bound(m, r, v, float(cfg.audit_delta), float(cfg.confidence))
    metrics = {
        "audit/canary_epsilon_lb": epsilon,
        "audit/canaries": float(m),
        "audit/canaries_in": float(included.sum()),
        "audit/canary_guesses": float(r),
        "audit/canary_correct": float(v),
        "audit/canary_precision": v / r,
        "audit/canary_auc": mann_whitney_auc(scores, included.long()),
        **extra,
        "audit/delta": float(cfg.audit_delta),
        "audit/confidence": float(cfg.confidence),
        "time/attack_s": time.perf_counter() - start,
    }
    torch.save(
        {"scores": scores, "included": included, "guesses": guesses, "indices": positions},
        output_dir(cfg) / "canaries.pt",
    )
    finish_loggers(build_loggers(cfg), hparams(cfg), metrics)
    log.info("audit/canary_epsilon_lb %.3f: %d of %d guesses right on %d canaries", epsilon, v, r, m)
    return metrics


def hparams(cfg: DictConfig) -> dict[str, object]:
    """The run's hparams as logged with its final metrics."""
    keys = ("canaries", "canary_kind", "score", "observation", "dirac_score", "guesses_in", "guesses_out")
    keys = (*keys, "audit_delta", "confidence", "seed")
    craft = {f"craft.{key}": value for key, value in cfg.craft.items()}
    return {"target.members": cfg.target.members, **{key: cfg[key] for key in keys}, **craft}
