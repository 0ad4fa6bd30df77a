from privacy_attacks.models.evaluator import AllConvNet, EvaluatorCNN
from privacy_attacks.models.lenet5 import ACTIVATIONS, LeNet5, Normalize

__all__ = ["ACTIVATIONS", "AllConvNet", "EvaluatorCNN", "LeNet5", "Normalize"]
