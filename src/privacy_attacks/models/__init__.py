from privacy_attacks.models.cnn import SmallVGG
from privacy_attacks.models.evaluator import AllConvNet, EvaluatorCNN
from privacy_attacks.models.layers import NamedBlocks, Normalize
from privacy_attacks.models.lenet5 import ACTIVATIONS, Deskew, DeskewedLeNet5, LeNet5
from privacy_attacks.models.mlp import MLP
from privacy_attacks.models.resnet import ResNet
from privacy_attacks.models.torchvision_nets import torchvision_classifier

__all__ = [
    "ACTIVATIONS",
    "AllConvNet",
    "Deskew",
    "DeskewedLeNet5",
    "EvaluatorCNN",
    "LeNet5",
    "MLP",
    "NamedBlocks",
    "Normalize",
    "ResNet",
    "SmallVGG",
    "torchvision_classifier",
]
