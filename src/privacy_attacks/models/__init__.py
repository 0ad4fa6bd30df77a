from privacy_attacks.models.evaluator import AllConvNet, EvaluatorCNN
from privacy_attacks.models.lenet5 import ACTIVATIONS, Deskew, DeskewedLeNet5, LeNet5, Normalize

__all__ = ["ACTIVATIONS", "AllConvNet", "Deskew", "DeskewedLeNet5", "EvaluatorCNN", "LeNet5", "Normalize"]
