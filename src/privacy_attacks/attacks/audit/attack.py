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
"""

from __future__ import annotations

import logging
import time

import torch
from omegaconf import DictConfig
from torch import Tensor

from privacy_attacks import cache
from privacy_attacks.attacks.membership.attack import training_set_size
from privacy_attacks.attacks.membership.metrics import mann_whitney_auc
from privacy_attacks.attacks.membership.scores import chosen_score
from privacy_attacks.batched import in_batches, net_device
from privacy_attacks.errors import ConfigError, require_choice, require_int, require_positive
from privacy_attacks.harness import build_loggers, finish_loggers
from privacy_attacks.io import output_dir
from privacy_attacks.targets import Target

from .bound import epsilon_lower_bound
from .canaries import CANARY_KINDS, canaries_with_images, check_dirac, nonmember_pool
from .dirac import DIRAC_SCORES, OBSERVATIONS, draw_dirac_canaries

log = logging.getLogger(__name__)
IN, OUT, ABSTAIN = 1, -1, 0


def validate(cfg: DictConfig, total: int | None = None) -> None:
    """:class:`ConfigError` before any work for a canary count that is not positive or larger than the images the
    target never trains on, guess counts that are negative, zero in all or more than the canaries, an unknown
    ``canary_kind``, ``score``, ``observation`` or ``dirac_score``, or a confidence or δ out of range; Dirac canaries
    without DP-SGD or beyond the network's parameter count (:func:`~.canaries.check_dirac`); crafted canaries with a
    ``craft.pixels`` outside (0, 1], negative ``craft.steps`` or a ``craft.lr`` that is not positive. ``total``: the
    training set's size (None: the configured dataset's)."""
    require_int(cfg.canaries, "canaries")
    require_choice(cfg.canary_kind, CANARY_KINDS, "canary_kind")
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
    if cfg.canary_kind == "dirac":
        check_dirac(cfg)
        return
    if cfg.canary_kind == "crafted":
        craft = cfg.craft
        for key in ("pixels", "density"):
            value = craft[key]
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 < value <= 1.0:
                raise ConfigError(f"craft.{key}={value!r} is not allowed: it must be a fraction in (0, 1].")
        require_int(craft.steps, "craft.steps", minimum=0)
        require_positive(craft.lr, "craft.lr")
        nonmember_pool(cfg, total)  # its images give the low-variance positions
        return
    pool = len(nonmember_pool(cfg, total))
    if cfg.canaries > pool:
        raise ConfigError(
            f"canaries={cfg.canaries} is more than the {pool} images target.members={cfg.target.members} leaves "
            f"outside the target's training set: lower canaries."
        )


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


def _log_probs(net: torch.nn.Module, images: Tensor, batch_size: int) -> Tensor:
    logits = in_batches(
        lambda chunk: net(chunk).double(), images, batch_size=batch_size, device=net_device(net), out=None
    )
    return logits.log_softmax(dim=-1).cpu()


def image_canary_scores(cfg: DictConfig, target: Target) -> tuple[Tensor, Tensor, Tensor, dict[str, float]]:
    """Image canaries scored on the trained model: (scores (m,), coins (m,) bool, positions (m,), extra metrics)."""
    validate(cfg, total=training_set_size(cfg.data))
    canaries, images = canaries_with_images(cfg)
    log_probs = _log_probs(target.net, images, int(cfg.data.eval_batch_size))
    scores = chosen_score(cfg.scores, cfg.score, "score")(log_probs, canaries.labels)
    fits = log_probs.argmax(dim=-1) == canaries.labels  # the canary's own label predicted
    included = canaries.included
    extra = {
        "audit/canary_fit_in": float(fits[included].float().mean()) if included.any() else 0.0,
        "audit/canary_fit_out": float(fits[~included].float().mean()) if (~included).any() else 0.0,
    }
    return scores, included, canaries.indices, extra


def dirac_canary_scores(cfg: DictConfig, target: Target) -> tuple[Tensor, Tensor, Tensor, dict[str, float]]:
    """Dirac canaries scored by what the auditor observed while the target trained (``target.recorded``,
    :meth:`~.dirac.DiracCanaries.record`): (scores (m,), coins (m,) bool, coordinates (m,), extra metrics).
    :func:`check_dirac` (part of :func:`validate`) gives the network's parameter count the coordinates are drawn
    from."""
    recorded = target.recorded
    coordinates, included = draw_dirac_canaries(int(cfg.seed), int(cfg.canaries), check_dirac(cfg))
    recorded_coordinates = recorded.get("coordinates", coordinates)  # (the key holds their digest too)
    if "last_iterate" not in recorded or not torch.equal(recorded_coordinates, coordinates):
        raise cache.unusable(target.checkpoint, "holds no observations of this audit's Dirac canaries")
    key = "last_iterate" if cfg.observation == "last_iterate" else cfg.dirac_score
    extra = {"audit/canary_steps": float(recorded["steps"])}
    return recorded[key], included, coordinates, extra


def run(cfg: DictConfig, target: Target) -> dict[str, float]:
    """Score the canaries on ``target`` (the canary target of ``attack.provision``) and return ``audit/*``."""
    start = time.perf_counter()
    score_canaries = dirac_canary_scores if cfg.canary_kind == "dirac" else image_canary_scores
    scores, included, positions, extra = score_canaries(cfg, target)
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
