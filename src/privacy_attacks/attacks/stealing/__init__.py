"""Model stealing: distil a local student from a black-box query API (lecture, "模型窃取" / "模型蒸馏").

Reusable pieces: :func:`distil` / :func:`fit_student` (train a student from API answers),
the losses of :mod:`.losses` (named in ``conf/attack/_losses.yaml``), the query pools of :mod:`.pools`
and :func:`fidelity_metrics`.
The ``attack=distillation`` entry is :func:`privacy_attacks.attacks.stealing.attack.run`.
"""

from .distillation import StudentDistillation, StudentEnsemble, distil, fidelity_metrics, fit_student, steps_for_budget
from .losses import DistillationLoss, HardLabel, HintonKL, LectureKL, SoftCrossEntropy, SquaredError
from .pools import (
    DatasetPool,
    FashionMNISTPool,
    MNISTPool,
    NoisePool,
    QueryPool,
    data_pool,
    dataset_evaluation_split,
    evaluation_split,
)

__all__ = [
    "DatasetPool",
    "DistillationLoss",
    "FashionMNISTPool",
    "HardLabel",
    "HintonKL",
    "LectureKL",
    "MNISTPool",
    "NoisePool",
    "QueryPool",
    "SoftCrossEntropy",
    "SquaredError",
    "StudentDistillation",
    "StudentEnsemble",
    "data_pool",
    "dataset_evaluation_split",
    "distil",
    "evaluation_split",
    "fidelity_metrics",
    "fit_student",
    "steps_for_budget",
]
