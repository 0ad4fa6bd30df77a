"""The dataset sources: each returns float (N, C, H, W) pixels in [0, 1] and long labels, or one line saying what to
set. CIFAR and SVHN are read from files of their layout written here (no internet in tests)."""

from __future__ import annotations

import functools
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from privacy_attacks.data import (
    CIFAR10Source,
    CIFAR100Source,
    FashionMNISTSource,
    ImageFolderSource,
    MNISTSource,
    SVHNSource,
    SyntheticSource,
    TorchvisionSource,
)
from privacy_attacks.data.folder import HIGH_DEPTH_MODES
from privacy_attacks.data.idx import read_idx_images, read_idx_labels
from privacy_attacks.data.mnist import data_digest
from privacy_attacks.data.source import ImageSource, SourceData
from privacy_attacks.errors import ConfigError, DataUnavailableError
from tests.conftest import fashion_mnist_root
from tests.idx import write_fake_fashion, write_fake_mnist, write_idx


def assert_pixels(images: torch.Tensor, labels: torch.Tensor, shape: tuple[int, ...], count: int) -> None:
    assert images.shape == (count, *shape) and images.dtype == torch.float32
    assert 0.0 <= images.min() and images.max() <= 1.0
    assert labels.shape == (count,) and labels.dtype == torch.long


def test_idx_labels_are_read_as_long(tmp_path):
    write_idx(tmp_path / "labels", torch.tensor([3, 1, 4, 1, 5]))
    assert read_idx_labels(tmp_path / "labels").tolist() == [3, 1, 4, 1, 5]
    write_idx(tmp_path / "images", torch.zeros(2, 3, 3))
    with pytest.raises(DataUnavailableError, match="not an IDX label file"):
        read_idx_labels(tmp_path / "images")
    assert read_idx_images(tmp_path / "images").shape == (2, 1, 3, 3)


@pytest.mark.parametrize("layout", ["debian", "torchvision"])
def test_fashion_mnist_source_reads_both_layouts(tmp_path, layout):
    folder = tmp_path if layout == "debian" else tmp_path / "FashionMNIST" / "raw"
    write_fake_fashion(folder, gz=layout == "debian")
    data = FashionMNISTSource(str(tmp_path)).load()
    assert_pixels(data.train_images, data.train_labels, (1, 28, 28), 30)
    assert_pixels(data.test_images, data.test_labels, (1, 28, 28), 10)
    assert data.train_labels[:12].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    assert len(data.class_names) == 10 and data.class_names[9] == "Ankle boot"


def test_missing_fashion_mnist_says_what_to_set(tmp_path):
    with pytest.raises(DataUnavailableError) as error:
        FashionMNISTSource(str(tmp_path / "nowhere")).load()
    message = str(error.value)
    assert "\n" not in message
    for needed in ("data.source.root=", "FASHION_MNIST_ROOT=", "apt-get install dataset-fashion-mnist"):
        assert needed in message


@pytest.mark.fashion_mnist
def test_fashion_mnist_source_reads_the_debian_package():
    data = FashionMNISTSource(fashion_mnist_root()).load()
    assert_pixels(data.train_images, data.train_labels, (1, 28, 28), 60_000)
    assert_pixels(data.test_images, data.test_labels, (1, 28, 28), 10_000)
    assert data.train_labels.bincount().tolist() == [6000] * 10


def test_mnist_source_is_load_mnist_and_its_digest(tmp_path):
    root = write_fake_mnist(tmp_path, n_train=20, n_test=10)
    source = MNISTSource(str(root), download=False)
    data = source.load()
    assert_pixels(data.train_images, data.train_labels, (1, 28, 28), 20)
    assert source.digest() == data_digest(root)


def test_the_digest_is_of_the_tensors_and_loads_are_copies():
    a, b = SyntheticSource(train_size=20, test_size=10), SyntheticSource(train_size=20, test_size=10)
    assert a.digest() == b.digest()
    assert SyntheticSource(train_size=20, test_size=10, seed=1).digest() != a.digest()
    first = a.load()
    first.train_images.zero_()
    assert a.load().train_images.max() > 0  # the kept tensors are not changed through a copy


def write_fake_cifar(root: Path, classes: int, n_train: int, n_test: int) -> None:
    """CIFAR-10 (``classes=10``) or CIFAR-100's pickled batches in torchvision's layout."""
    hundred = classes == 100
    folder = root / ("cifar-100-python" if hundred else "cifar-10-batches-py")
    folder.mkdir(parents=True)
    generator = torch.Generator().manual_seed(0)
    label_key = "fine_labels" if hundred else "labels"
    parts = [("train", n_train), ("test", n_test)] if hundred else [(f"data_batch_{i}", n_train) for i in range(1, 6)]
    if not hundred:
        parts.append(("test_batch", n_test))
    for name, n in parts:
        entry = {
            "data": torch.randint(0, 256, (n, 3072), generator=generator, dtype=torch.uint8).numpy(),
            label_key: (torch.arange(n) % classes).tolist(),
        }
        (folder / name).write_bytes(pickle.dumps(entry))
    names = [f"name{c}" for c in range(classes)]
    meta = {"fine_label_names": names} if hundred else {"label_names": names}
    (folder / ("meta" if hundred else "batches.meta")).write_bytes(pickle.dumps(meta))


@pytest.fixture
def unchecked_files(monkeypatch):
    """torchvision checks the files' md5 sums; the files written here are not the originals."""
    import torchvision.datasets.cifar as cifar
    from torchvision.datasets import CIFAR10, SVHN

    monkeypatch.setattr(CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(SVHN, "_check_integrity", lambda self: True)
    monkeypatch.setattr(cifar, "check_integrity", lambda *args, **kwargs: True)


@pytest.mark.usefixtures("unchecked_files")
@pytest.mark.parametrize(("source", "classes"), [(CIFAR10Source, 10), (CIFAR100Source, 100)])
def test_cifar_sources_read_torchvisions_layout(tmp_path, source, classes):
    write_fake_cifar(tmp_path, classes, n_train=4, n_test=6)
    data = source(str(tmp_path), download=False).load()
    n_train = 4 if classes == 100 else 20
    assert_pixels(data.train_images, data.train_labels, (3, 32, 32), n_train)
    assert_pixels(data.test_images, data.test_labels, (3, 32, 32), 6)
    assert data.class_names == tuple(f"name{c}" for c in range(classes))
    raw = pickle.loads(
        (tmp_path / ("cifar-100-python/train" if classes == 100 else "cifar-10-batches-py/data_batch_1")).read_bytes()
    )
    first = torch.from_numpy(raw["data"][0]).view(3, 32, 32).float() / 255  # rows of R, then G, then B
    torch.testing.assert_close(data.train_images[0], first)


@pytest.mark.usefixtures("unchecked_files")
def test_svhn_source_reads_torchvisions_layout(tmp_path):
    from scipy.io import savemat

    generator = torch.Generator().manual_seed(0)
    for split, n in (("train", 12), ("test", 5)):
        images = torch.randint(0, 256, (32, 32, 3, n), generator=generator, dtype=torch.uint8).numpy()
        labels = (torch.arange(n) % 10 + 1).view(n, 1).numpy()  # SVHN's files label the digit 0 as 10
        savemat(tmp_path / f"{split}_32x32.mat", {"X": images, "y": labels})
    data = SVHNSource(str(tmp_path), download=False).load()
    assert_pixels(data.train_images, data.train_labels, (3, 32, 32), 12)
    assert_pixels(data.test_images, data.test_labels, (3, 32, 32), 5)
    assert data.train_labels[:10].tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 0]
    assert data.class_names == tuple(str(d) for d in range(10))


@pytest.mark.parametrize("source", [CIFAR10Source, CIFAR100Source, SVHNSource])
def test_missing_torchvision_data_says_what_to_set(tmp_path, source):
    with pytest.raises(DataUnavailableError) as error:
        source(str(tmp_path / "nowhere"), download=False).load()
    message = str(error.value)
    assert "\n" not in message and "data.source.root=" in message and "data.source.download=true" in message
    assert f"{source.env}=" in message


class TinyDataset:
    """A torchvision-like dataset: PIL images and int labels, its split chosen by ``train``."""

    classes = ["a", "b", "c"]

    def __init__(self, root: str, train: bool, transform=None, download: bool = False):
        from PIL import Image

        self.items = [(Image.new("L", (5, 4), color=40 * i), i % 3) for i in range(6 if train else 3)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        return self.items[index]


def test_any_torchvision_dataset_by_its_class(tmp_path):
    source = TorchvisionSource(functools.partial(TinyDataset, root=str(tmp_path), download=False), name="tiny")
    data = source.load()
    assert_pixels(data.train_images, data.train_labels, (1, 4, 5), 6)
    assert_pixels(data.test_images, data.test_labels, (1, 4, 5), 3)
    torch.testing.assert_close(data.train_images[2], torch.full((1, 4, 5), 80 / 255))
    assert data.class_names == ("a", "b", "c")
    declared = functools.partial(TorchvisionSource, functools.partial(TinyDataset, root=str(tmp_path)), name="tiny")
    assert len(declared(train_size=6).load().train_labels) == 6
    with pytest.raises(ConfigError, match="tiny holds 6 training images, not the 60 .*data.source.train_size=6"):
        declared(train_size=60).load()
    with pytest.raises(ConfigError, match="does not take the split arguments"):
        TorchvisionSource(functools.partial(TinyDataset, root="."), train={"split": "train"}).load()


class MixedSizes(TinyDataset):
    """Images of two sizes, as Caltech101's or Flowers102's are without a transform."""

    def __init__(self, root: str, train: bool, transform=None, download: bool = False):
        from PIL import Image

        self.items = [(Image.new("L", (5, 4) if i % 2 else (8, 8)), i % 3) for i in range(6)]


def test_a_torchvision_dataset_of_several_image_sizes_asks_for_a_transform(tmp_path):
    source = TorchvisionSource(functools.partial(MixedSizes, root=str(tmp_path)), name="mixed")
    with pytest.raises(ConfigError, match=r"^mixed gives images of several shapes .*torchvision.transforms.Resize"):
        source.load()


def test_synthetic_images_are_seeded_balanced_and_learnable():
    source = SyntheticSource(image_shape=(3, 16, 12), num_classes=5, train_size=500, test_size=100, seed=3)
    data = source.load()
    assert_pixels(data.train_images, data.train_labels, (3, 16, 12), 500)
    assert_pixels(data.test_images, data.test_labels, (3, 16, 12), 100)
    assert data.train_labels.bincount().tolist() == [100] * 5
    again = SyntheticSource(image_shape=(3, 16, 12), num_classes=5, train_size=500, test_size=100, seed=3).read()
    assert torch.equal(again.train_images, data.train_images)
    # the nearest class mean of the training images classifies the test images far above chance (0.2)
    means = torch.stack([data.train_images[data.train_labels == c].mean(0) for c in range(5)]).flatten(1)
    nearest = torch.cdist(data.test_images.flatten(1), means).argmin(1)
    assert (nearest == data.test_labels).float().mean() > 0.9


@pytest.mark.parametrize("bad", [{"image_shape": (3, 32)}, {"num_classes": 1}, {"train_size": 0}, {"noise": -1}])
def test_bad_synthetic_settings_are_refused(bad):
    with pytest.raises(ConfigError):
        SyntheticSource(**bad)


def write_image_folder(root: Path, classes: list[str], per_class: int) -> Path:
    from PIL import Image

    for index, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (20 + i, 10), color=(30 * index, 100, 200)).save(root / name / f"{i}.png")
    return root


@pytest.mark.parametrize("channels", [1, 3])
def test_a_folder_of_images_becomes_tensors_of_one_shape(tmp_path, channels):
    train = write_image_folder(tmp_path / "train", ["cat", "dog"], 3)
    test = write_image_folder(tmp_path / "test", ["cat", "dog"], 2)
    data = ImageFolderSource(str(train), str(test), image_shape=(channels, 8, 6)).load()
    assert_pixels(data.train_images, data.train_labels, (channels, 8, 6), 6)
    assert_pixels(data.test_images, data.test_labels, (channels, 8, 6), 4)
    assert data.class_names == ("cat", "dog") and sorted(data.train_labels.tolist()) == [0, 0, 0, 1, 1, 1]


def test_a_set_in_class_order_is_shuffled_once_so_that_each_half_holds_every_class(tmp_path):
    from privacy_attacks.data.source import out_of_class_order

    train = write_image_folder(tmp_path / "train", ["cat", "dog", "eel"], 2)
    test = write_image_folder(tmp_path / "test", ["cat", "dog", "eel"], 6)  # read class by class
    data = ImageFolderSource(str(train), str(test), image_shape=(1, 8, 6)).load()
    first, second = data.test_labels[:9], data.test_labels[9:]  # the stealing report set; the GAN's public images
    assert set(first.tolist()) == set(second.tolist()) == {0, 1, 2}
    again = ImageFolderSource(str(train), str(test), image_shape=(1, 8, 6)).read()
    assert torch.equal(out_of_class_order(again.test_images, again.test_labels)[1], data.test_labels)  # fixed order
    mixed = torch.tensor([1, 0, 2, 1])
    assert out_of_class_order(torch.zeros(4, 1, 2, 2), mixed)[1] is mixed  # MNIST's and CIFAR's order stays


def test_a_folder_of_images_says_what_is_wrong(tmp_path):
    train = write_image_folder(tmp_path / "train", ["cat", "dog"], 1)
    with pytest.raises(DataUnavailableError, match="data.source.test_dir="):
        ImageFolderSource(str(train), str(tmp_path / "nowhere")).load()
    other = write_image_folder(tmp_path / "other", ["cat", "cow"], 1)
    with pytest.raises(ConfigError, match="same classes"):
        ImageFolderSource(str(train), str(other)).load()
    with pytest.raises(ConfigError, match="1 or 3 channels"):
        ImageFolderSource(str(train), str(train), image_shape=(2, 8, 8))


def test_an_empty_class_subfolder_is_named_as_such(tmp_path):
    train = write_image_folder(tmp_path / "train", ["cat", "dog"], 2)
    test = write_image_folder(tmp_path / "test", ["cat"], 1)
    (test / "dog").mkdir()
    with pytest.raises(DataUnavailableError, match=r"A class subfolder of .*test holds no image \(.*dog"):
        ImageFolderSource(str(train), str(test)).load()


def test_a_folder_of_images_refuses_one_class_an_unreadable_file_and_its_own_test_set(tmp_path):
    train = write_image_folder(tmp_path / "train", ["cat", "dog"], 2)
    test = write_image_folder(tmp_path / "test", ["cat", "dog"], 1)
    with pytest.raises(ConfigError, match="the same folder"):
        ImageFolderSource(str(train), str(tmp_path / "train" / ".." / "train"))
    single = write_image_folder(tmp_path / "single", ["cat"], 2)
    with pytest.raises(ConfigError, match="at least two classes"):
        ImageFolderSource(str(single), str(test)).load()
    (train / "cat" / "bad.png").write_text("not an image")
    with pytest.raises(DataUnavailableError, match=r"bad\.png is not a readable image .*data\.source\.train_dir"):
        ImageFolderSource(str(train), str(test)).load()


@pytest.mark.parametrize("channels", [1, 3])
def test_16_bit_greyscale_images_are_scaled_by_their_depth_not_saturated(tmp_path, channels):
    """At their own size the values are the file's over 65535; resized, a mean of them (not of 8-bit saturated ones)."""
    from PIL import Image

    ramp = np.linspace(0, 65535, 16, dtype=np.uint16).reshape(4, 4)
    for root in ("train", "test"):
        for name in ("a", "b"):
            (tmp_path / root / name).mkdir(parents=True)
            Image.fromarray(ramp).save(tmp_path / root / name / "0.png")  # a 16-bit greyscale PNG
    assert Image.open(tmp_path / "train" / "a" / "0.png").mode in HIGH_DEPTH_MODES
    data = ImageFolderSource(str(tmp_path / "train"), str(tmp_path / "test"), image_shape=(channels, 4, 4)).load()
    expected = torch.from_numpy(ramp.astype(np.float32) / 65535).expand(channels, -1, -1)
    torch.testing.assert_close(data.train_images[0], expected)
    assert data.train_images.shape == (2, channels, 4, 4)
    half = ImageFolderSource(str(tmp_path / "train"), str(tmp_path / "test"), image_shape=(channels, 2, 2)).load()
    assert half.train_images.shape == (2, channels, 2, 2)
    torch.testing.assert_close(half.train_images.mean(), expected.mean(), atol=0.02, rtol=0)  # 0.5, not about 1


def test_a_failed_download_leaves_no_folder_it_made(tmp_path):
    from privacy_attacks.data.source import fetch

    (tmp_path / "kept" / "old").mkdir(parents=True)

    def download(root):  # makes its layout, writes nothing, then fails, as torchvision does without internet
        (root / "MNIST" / "raw").mkdir(parents=True)
        raise RuntimeError(
            "Error downloading train-images-idx3-ubyte.gz:\nTried https://...\n<urlopen error [Errno -2]>\n"
        )

    root = tmp_path / "new" / "deeper"
    one_line = r"downloading it failed \(RuntimeError: Error downloading [^\n]*: \.\.\. <urlopen error \[Errno -2\]>\)$"
    with pytest.raises(DataUnavailableError, match=one_line):
        fetch(lambda: download(root), lambda reason: f"missing: {reason}", root=root)
    assert not (tmp_path / "new").exists()
    with pytest.raises(DataUnavailableError):
        fetch(lambda: download(tmp_path / "kept"), lambda reason: f"missing: {reason}", root=tmp_path / "kept")
    assert sorted(p.name for p in (tmp_path / "kept").rglob("*")) == ["old"]  # what was there before stays


class OwnSource(ImageSource):
    """A researcher's own source, giving whatever tensors a test hands it."""

    def __init__(self, name: str, **parts):
        self.name, self.parts = name, parts

    def identity(self) -> tuple:
        return (self.name,)

    def read(self) -> SourceData:
        images, labels = torch.rand(6, 1, 8, 8), torch.arange(6) % 3
        parts = {"train_images": images, "train_labels": labels, "test_images": images, "test_labels": labels}
        return SourceData(**{**parts, **self.parts}, class_names=None)


@pytest.mark.parametrize(
    ("parts", "message"),
    [
        ({"train_images": torch.rand(6, 1, 8, 8) * 255}, r"training pixels from .* to .*: give pixels in \[0, 1\]"),
        ({"test_images": (torch.rand(6, 1, 8, 8) * 255).byte()}, r"test images of dtype torch.uint8: give floats"),
        ({"train_labels": torch.zeros(6)}, r"training labels of dtype torch.float32: give integer class indices"),
        ({"test_images": torch.rand(6, 1, 7, 8)}, r"training images of shape \[1, 8, 8\] and test images of shape"),
    ],
)
def test_a_source_giving_what_the_framework_cannot_read_is_one_line(parts, message):
    with pytest.raises(ConfigError, match=message):
        OwnSource(f"bad {message}", **parts).load()


def test_a_sources_integer_labels_of_any_width_are_read_as_long():
    data = OwnSource("int32 labels", train_labels=torch.arange(6, dtype=torch.int32) % 3).load()
    assert data.train_labels.dtype == data.test_labels.dtype == torch.long


class MissingFileSource(OwnSource):
    def read(self) -> SourceData:
        return torch.load("/nowhere/images.pt")


def test_data_of_many_channels_and_a_narrow_width_is_not_taken_for_channels_last():
    """Tabular features fed as (N, 600, 1, 1), or signals as (N, 12, 100, 1): only the data config's declared
    image_shape can tell channels-last images from these (data/module.py names them against it)."""
    for shape in ((6, 600, 1, 1), (6, 12, 100, 1), (6, 8, 16, 3)):
        assert OwnSource(f"shape {shape}", train_images=torch.rand(shape), test_images=torch.rand(shape)).load()


def test_a_source_of_ones_own_whose_file_is_missing_is_one_line():
    with pytest.raises(DataUnavailableError, match=r"MissingFileSource cannot read its data: /nowhere/images.pt does"):
        MissingFileSource("missing").load()


def test_a_training_set_size_declared_but_not_what_the_files_hold_is_one_line_naming_the_key():
    """The sizes worked out before reading (the judges' halves, the attacker's windows) follow the declared size: one
    the files do not have stops at the first read, instead of silently shrinking or overrunning those windows."""

    class Declared(ImageSource):
        name, train_size_key = "declared", "data.source.train_size"

        def __init__(self, train_size):
            self.train_size = train_size

        def identity(self):
            return ("declared",)

        def read(self):
            labels = torch.arange(40) % 2
            return SourceData(torch.rand(40, 1, 4, 4), labels, torch.rand(10, 1, 4, 4), labels[:10])

    assert len(Declared(40).load().train_labels) == len(Declared(None).load().train_labels) == 40
    for declared in (50, 30):
        message = f"declared holds 40 training images, not the {declared} its config declares: set "
        with pytest.raises(ConfigError, match=message + "data.source.train_size=40"):
            Declared(declared).load()
