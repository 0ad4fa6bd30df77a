"""What a data config (``conf/data/<name>.yaml``) says about its dataset without building the data module: its
source, its name, its shape and classes, the entry that names it in a cached model's key, and the images a recipe
trains on."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from privacy_attacks.data.mnist import IMAGE_SHAPE, MNIST_DIGEST, NUM_CLASSES, MNISTSource
from privacy_attacks.data.module import checked_shape
from privacy_attacks.data.source import ImageSource
from privacy_attacks.data.tensors import split_indices
from privacy_attacks.errors import ConfigError, require_int
from privacy_attacks.harness import instantiate_checked


def is_mnist(data: Any) -> bool:
    """Whether ``data`` is MNIST's config (``data=mnist``: MNIST's files under ``data.root``, read without a
    ``source`` node). A config without ``source`` and ``name`` is MNIST's, as every data config once was."""
    return data.get("source") is None and data.get("name", "mnist") == "mnist"


def check_source_node(data: Any) -> None:
    """:class:`ConfigError` in one line for a data config that does not say how to read its data: a ``source`` node
    without ``_target_``, or none in a config of another name than MNIST's (a data file that lost its
    ``defaults: [image_folder]`` line, copied without it)."""
    source, name = data.get("source"), data.get("name", "mnist")
    how = (
        "a folder of images takes defaults: [image_folder] at the top of its config, a torchvision dataset a source "
        "node with its _target_ (docs/own_data_and_model.md)"
    )
    if source is None and name != "mnist":
        raise ConfigError(f"data={name} has no source node, so nothing says how to read it: {how}.")
    if source is not None and "_target_" not in source:
        raise ConfigError(f"data={name}'s source node has no _target_, so nothing says how to read it: {how}.")


def data_source(data: Any) -> ImageSource:
    """The :class:`~privacy_attacks.data.source.ImageSource` of ``data``: its ``source`` node, or MNIST's files under
    ``data.root`` for MNIST's config."""
    check_source_node(data)
    if data.get("source") is None:
        return MNISTSource(data.root, data.get("download", False))
    return instantiate_checked(data.source)  # a bad setting: the source's own message


def training_set_size(data: Any) -> int:
    """The size of the configured dataset's training set (``data=``): known without reading it for most sources,
    else read."""
    source = data_source(data)
    return source.train_size if source.train_size is not None else len(source.load().train_labels)


def data_name(data: Any) -> str:
    """The dataset's name: ``data.name`` (``mnist`` for MNIST's config)."""
    if data.get("name") is not None:
        return str(data.name)
    return "mnist" if data.get("source") is None else data_source(data).name


def data_shape(data: Any) -> tuple[tuple[int, ...] | None, int | None]:
    """``(image_shape, num_classes)`` the config declares (MNIST's for a config without them and without a source;
    None where a config leaves them to the data)."""
    mnist = data.get("source") is None
    shape = checked_shape(data.get("image_shape", IMAGE_SHAPE if mnist else None))
    classes = data.get("num_classes", NUM_CLASSES if mnist else None)
    require_int(classes, "data.num_classes", minimum=2, null_means="read from the data")
    return (None if shape is None else tuple(int(s) for s in shape)), (None if classes is None else int(classes))


def data_identity(data: Any) -> dict[str, str] | None:
    """The entry that names the data in a cached model's key: None for MNIST's own files (the keys of every model
    cached before other data existed), ``{"digest": ...}`` for other files in MNIST's place, ``{"name": ...,
    "digest": ...}`` for any other dataset. The digest is of the tensors the source returns
    (:meth:`~privacy_attacks.data.source.ImageSource.digest`), so other content never reuses a model."""
    digest = data_source(data).digest()
    if is_mnist(data):
        return None if digest == MNIST_DIGEST else {"digest": digest}
    return {"name": data_name(data), "digest": digest}


def recipe_members(data: Any, recipe: Any) -> tuple[Tensor, Tensor]:
    """The training images and labels a classifier recipe trains on: its ``members`` images of the training
    pool from ``member_offset`` (all of the pool without ``members``), under the data config's split:
    (M, C, H, W), (M,)."""
    source = data_source(data).load()
    index = split_indices(
        data.val_size, data.split_seed, recipe.get("members"), len(source.train_labels), recipe.get("member_offset", 0)
    )["train"]
    return source.train_images[index], source.train_labels[index]


def attacker_training_images(data: Any) -> Tensor:
    """The training images outside the validation split (the training pool, members and non-members alike):
    (A, C, H, W). No private image of either set is among them (report: test images; tune: the validation split)."""
    return attacker_training_set(data)[0]


def attacker_training_set(data: Any) -> tuple[Tensor, Tensor]:
    """:func:`attacker_training_images` and their labels, (A, C, H, W) and (A,): the attacker's own labelled data."""
    source = data_source(data).load()
    split = split_indices(data.val_size, data.split_seed, None, len(source.train_labels))
    index = torch.cat([split["train"], split["nonmember"]])
    return source.train_images[index], source.train_labels[index]
