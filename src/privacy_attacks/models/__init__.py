from privacy_attacks.models.cnn import SmallVGG
from privacy_attacks.models.evaluator import AllConvNet, EvaluatorCNN
from privacy_attacks.models.layers import NamedBlocks, Normalize
from privacy_attacks.models.lenet5 import ACTIVATIONS, Deskew, DeskewedLeNet5, LeNet5
from privacy_attacks.models.mlp import MLP
from privacy_attacks.models.resnet import ResNet
from privacy_attacks.models.torchvision_nets import torchvision_classifier

from . import cnn, evaluator, lenet5, lenet_sigmoid, mlp, resnet, torchvision_nets

# The modules of the framework's own networks: their models are cached under their settings only. A network of any
# other module (a researcher's own, inside the package or not) is keyed by its source file too, so an edit retrains.
NETWORK_MODULES = frozenset(m.__name__ for m in (cnn, evaluator, lenet5, lenet_sigmoid, mlp, resnet, torchvision_nets))

__all__ = [
    "ACTIVATIONS",
    "AllConvNet",
    "Deskew",
    "DeskewedLeNet5",
    "EvaluatorCNN",
    "LeNet5",
    "MLP",
    "NETWORK_MODULES",
    "NamedBlocks",
    "Normalize",
    "ResNet",
    "SmallVGG",
    "torchvision_classifier",
]
