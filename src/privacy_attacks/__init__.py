"""privacy_attacks: attacks on training-data privacy and model ownership.

Model inversion, membership inference and model stealing against image
classifiers, built on PyTorch Lightning and composed by Hydra.
Pixel convention everywhere: images are float tensors of shape (N, 1, 28, 28)
in [0, 1] pixel space; every model normalises inside itself.
"""

__version__ = "0.1.0"

from privacy_attacks import resolvers  # noqa: E402,F401 - the configs' ${pool_share:...}
