from privacy_attacks.models.evaluator import EvaluatorCNN
from privacy_attacks.models.lenet5 import ACTIVATIONS, LeNet5, Normalize

__all__ = ["ACTIVATIONS", "EvaluatorCNN", "LeNet5", "Normalize"]
