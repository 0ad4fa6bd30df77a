"""A dataset restricted to some of its classes: the private/public class split of generative-prior model inversion
(GMI, Zhang et al. 2020: the target trains on some identities, the attacker's generator on the others).

``data=mnist_classes`` keeps MNIST's digits 0-4 (relabelled 0-4) for every recipe, judge and attack; the other
digits (:meth:`ClassSubset.excluded`) are images no recipe ever trains on: the attacker's public images under
``prior=gan gan.public=other_classes``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from privacy_attacks.data.source import ImageSource, SourceData
from privacy_attacks.errors import ConfigError


class ClassSubset(ImageSource):
    """The images of ``source`` whose label is among ``classes``, relabelled 0..K-1 in the order given (training and
    test sets alike; class names kept).

    Args:
        source: any :class:`~privacy_attacks.data.source.ImageSource`.
        classes: the labels kept (at least two, distinct).
    """

    def __init__(self, source: ImageSource, classes: Sequence[int]):
        kept = [int(c) for c in classes]
        if len(kept) < 2 or len(set(kept)) != len(kept) or min(kept) < 0:
            raise ConfigError(f"data.classes={list(classes)} is not allowed: give two or more distinct labels >= 0.")
        self.source, self.classes = source, tuple(kept)
        self.name = f"{source.name}_classes"

    def identity(self) -> tuple:
        return (type(self.source).__qualname__, *self.source.identity(), self.classes)

    def _split(self, inside: bool) -> SourceData:
        data = self.source.load()
        top = int(max(data.train_labels.max(), data.test_labels.max()))
        if max(self.classes) > top:
            raise ConfigError(f"data.classes={list(self.classes)}: {self.source.name} has labels 0-{top} only.")
        relabel = torch.full((top + 1,), -1, dtype=torch.long)
        relabel[list(self.classes)] = torch.arange(len(self.classes))

        def take(images, labels):
            keep = (relabel[labels] >= 0) == inside
            return images[keep], (relabel[labels[keep]] if inside else labels[keep])

        train = take(data.train_images, data.train_labels)
        test = take(data.test_images, data.test_labels)
        names = data.class_names
        if inside and names is not None:
            names = tuple(names[c] for c in self.classes)
        return SourceData(*train, *test, names)

    def read(self) -> SourceData:
        return self._split(inside=True)

    def excluded(self) -> SourceData:
        """The images of the other classes, with their original labels: no recipe on this data trains on them."""
        return self._split(inside=False)
