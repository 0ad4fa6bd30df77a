"""The model cache: content-hash keys (pinned: existing cache files must keep their names), lock, errors."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import pytest
import torch
from filelock import FileLock, SoftFileLock
from omegaconf import OmegaConf

from privacy_attacks import cache
from privacy_attacks.attacks.feature_inversion.inversion_network import inversion_cache_path
from privacy_attacks.attacks.membership.shadow_models import shadow_cache_path
from privacy_attacks.data.mnist import MNIST_DIGEST, data_digest
from privacy_attacks.errors import CheckpointError, ConfigError
from privacy_attacks.models import LeNet5
from privacy_attacks.targets import checkpoint_path, checkpoint_spec
from tests.conftest import ROOT, mnist_root
from tests.idx import write_fake_mnist

RECIPE = OmegaConf.create(
    {
        "net": {"_target_": "privacy_attacks.models.LeNet5", "num_classes": 10},
        "optimizer": {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 0.001},
        "max_epochs": 2,
        "batch_size": 64,
        "members": 1000,
        "seed": 0,
    }
)
DATA = OmegaConf.create({"val_size": 5000, "split_seed": 0, "root": "not part of the key"})


def test_key_is_a_hash_of_the_spec_with_sorted_keys():
    assert cache.cache_key({"a": 1, "b": [2, 3]}) == cache.cache_key({"b": [2, 3], "a": 1})
    assert cache.cache_key({"a": 1}) != cache.cache_key({"a": 2})
    assert re.fullmatch(r"[0-9a-f]{12}", cache.cache_key({}))
    assert cache.cache_path("dir", "target", {"a": 1}) == Path("dir") / f"target-{cache.cache_key({'a': 1})}.pt"


@pytest.mark.mnist
def test_cache_file_names_are_pinned(tmp_path: Path, unkeyed_threads):
    """The names of existing cache files: a change here would orphan every cached target, shadow set and decoder.
    MNIST's own files, the consecutive batch order and the project's trainer settings add nothing to a target's key;
    the hashed batch order (the default now), other data and other trainer settings each name another file."""
    data = OmegaConf.merge(DATA, {"root": mnist_root(), "download": False})
    assert data_digest(data.root) == MNIST_DIGEST
    assert checkpoint_path(RECIPE, data, tmp_path, "target").name == "target-bcd14cca1cfd.pt"
    trainer = OmegaConf.load(ROOT / "conf" / "trainer" / "cpu.yaml")
    assert checkpoint_path(RECIPE, data, tmp_path, "target", trainer=trainer).name == "target-bcd14cca1cfd.pt"
    others = [
        checkpoint_path(RECIPE, OmegaConf.merge(data, {"batch_order": "hashed"}), tmp_path, "target"),
        checkpoint_path(
            RECIPE, data, tmp_path, "target", trainer=OmegaConf.merge(trainer, {"precision": "bf16-mixed"})
        ),
        checkpoint_path(RECIPE, data, tmp_path, "target", trainer=OmegaConf.merge(trainer, {"deterministic": False})),
        checkpoint_path(RECIPE, data, tmp_path, "target", device="cuda"),
    ]
    assert len({path.name for path in others} | {"target-bcd14cca1cfd.pt"}) == 5
    images = torch.arange(4 * 28 * 28, dtype=torch.float32).view(4, 1, 28, 28) / 3136
    labels = torch.tensor([0, 1, 2, 3])
    subsets = torch.tensor([[0, 1], [2, 3]])
    assert shadow_cache_path(tmp_path, RECIPE, images, labels, subsets, [3, 4]).name == "shadows-2b7775713ca9.pt"
    settings = {"train_images": 512, "epochs": 1, "batch_size": 64, "lr": 0.001, "width": 64, "seed": 0}
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = LeNet5()
    images_key = {"data": MNIST_DIGEST, "val_size": 5000, "split_seed": 0}
    path = inversion_cache_path(tmp_path, net, "conv2", settings, images_key)
    # format 4: keyed by the target's weights and the attacker's images (format 3 named the target's file)
    assert path.name == "inversion-dbe60420cf8d.pt"


@pytest.mark.mnist
def test_another_cpu_thread_count_names_another_file(tmp_path: Path, unkeyed_threads):
    """A CPU thread count changes the order of torch's sums, hence trained weights: targets, shadow models and
    decoders trained with another count are cached apart; at the unkeyed count the keys stay as they were."""
    data = OmegaConf.merge(DATA, {"root": mnist_root(), "download": False})
    images, labels, subsets = torch.zeros(4, 1, 28, 28), torch.arange(4), torch.tensor([[0, 1], [2, 3]])
    settings = {"train_images": 512, "epochs": 1}
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = LeNet5()

    def names() -> list[str]:
        return [
            checkpoint_path(RECIPE, data, tmp_path, "target").name,
            shadow_cache_path(tmp_path, RECIPE, images, labels, subsets, [0, 1]).name,
            inversion_cache_path(tmp_path, net, "conv2", settings, {"data": "x"}).name,
        ]

    assert cache.device_entry("cpu") == {} and cache.device_entry("cuda") == {"device": "cuda"}
    unkeyed = names()
    torch.set_num_threads(1)  # the fixture restores the count
    assert cache.device_entry("cpu") == {"cpu_threads": 1}
    assert all(a != b for a, b in zip(names(), unkeyed, strict=True))
    assert "cpu_threads" not in checkpoint_spec(RECIPE, data, device="cuda")  # a GPU's kernels, not the CPU's threads


def test_other_data_in_the_same_folder_is_another_key(tmp_path: Path):
    """Another dataset in MNIST's layout under the same root: its digest, hence the target's key, differs."""
    write_fake_mnist(tmp_path, n_train=20, n_test=10)
    data = OmegaConf.merge(DATA, {"root": str(tmp_path), "download": False})
    assert data_digest(tmp_path) != MNIST_DIGEST
    spec = checkpoint_spec(RECIPE, data)
    assert spec["data"] == {"digest": data_digest(tmp_path)}
    assert checkpoint_path(RECIPE, data, tmp_path, "target").name != "target-bcd14cca1cfd.pt"


def test_a_file_made_under_other_library_versions_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = tmp_path / "thing-abc.pt"
    cache.save(path, {"x": torch.ones(2)})
    torch.testing.assert_close(cache.read(path)["x"], torch.ones(2))
    here = cache.library_versions()
    monkeypatch.setattr(cache, "library_versions", lambda: {**here, "torch": "0.0.1"})
    with pytest.raises(CheckpointError, match=r"other library versions \(torch .* there, 0.0.1 here\).*Delete"):
        cache.read(path)
    torch.save({"x": torch.ones(2)}, path)  # a file of an earlier release: no versions recorded
    with pytest.raises(CheckpointError, match="without the library versions.*Delete"):
        cache.read(path)


@pytest.mark.parametrize("lock", ["file", "soft"])
def test_a_lock_held_too_long_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lock: str):
    """A soft lock left behind by a killed job would otherwise be waited on for ever."""
    monkeypatch.setenv(cache.LOCK_ENV, lock)
    monkeypatch.setenv(cache.LOCK_TIMEOUT_ENV, "0.2")
    path = tmp_path / "thing-abc.pt"
    held = cache.lock_type()(f"{path}.lock")
    held.acquire()
    try:
        with pytest.raises(CheckpointError, match=rf"Waited 0 s for the lock {re.escape(str(path))}.lock.*delete"):
            with cache.locked(path):
                pass
    finally:
        held.release()
    monkeypatch.setenv(cache.LOCK_TIMEOUT_ENV, "soon")
    with pytest.raises(ConfigError, match="PRIVACY_ATTACKS_LOCK_TIMEOUT='soon' is not allowed"):
        cache.lock_timeout()


def test_provision_creates_once_then_loads(tmp_path: Path):
    path = tmp_path / "sub" / "thing-abc.pt"
    calls = []

    def create(p: Path) -> dict:
        calls.append(p)
        cache.save(p, {"x": torch.ones(2)})
        return {"x": torch.ones(2)}

    first, cached = cache.provision(path, create, cache.read)
    assert not cached and calls == [path] and path.exists()
    second, cached = cache.provision(path, create, cache.read)
    assert cached and calls == [path]
    torch.testing.assert_close(second["x"], first["x"])


def test_a_cached_file_is_read_without_its_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The default lock leaves an empty ``<file>.lock`` beside every cached file, which a soft lock would take for a
    held one: reading a file already there takes no lock."""
    path = tmp_path / "model.pt"
    cache.save(path, {"v": 1})
    (tmp_path / "model.pt.lock").touch()  # what FileLock leaves behind
    monkeypatch.setenv(cache.LOCK_ENV, "soft")
    monkeypatch.setenv(cache.LOCK_TIMEOUT_ENV, "0.1")
    loaded, cached = cache.provision(path, lambda p: pytest.fail("built again"), cache.read)
    assert cached and loaded == {"v": 1}


@pytest.mark.parametrize("lock", ["file", "soft"])
def test_concurrent_provision_creates_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lock: str):
    monkeypatch.setenv(cache.LOCK_ENV, lock)
    path = tmp_path / "thing-abc.pt"
    calls, results = [], []

    def create(p: Path) -> int:
        calls.append(1)
        cache.save(p, {"v": torch.tensor(1)})
        return 1

    def job():
        results.append(cache.provision(path, create, lambda p: int(cache.read(p)["v"]))[0])

    threads = [threading.Thread(target=job) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert calls == [1] and results == [1, 1, 1, 1]


def test_the_lock_type_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv(cache.LOCK_ENV, raising=False)
    assert cache.lock_type() is FileLock
    monkeypatch.setenv(cache.LOCK_ENV, "soft")
    assert cache.lock_type() is SoftFileLock
    monkeypatch.setenv(cache.LOCK_ENV, "nfs")
    with pytest.raises(ConfigError, match="PRIVACY_ATTACKS_LOCK='nfs' is not one of the choices: file, soft"):
        cache.lock_type()


def test_a_soft_lock_is_a_marker_file_while_held(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(cache.LOCK_ENV, "soft")
    path = tmp_path / "thing-abc.pt"
    with cache.locked(path):
        assert (tmp_path / "thing-abc.pt.lock").exists()
    assert not (tmp_path / "thing-abc.pt.lock").exists()


def test_an_unreadable_file_names_itself_and_says_to_delete_it(tmp_path: Path):
    path = tmp_path / "thing-abc.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=f"Checkpoint {re.escape(str(path))} is corrupt or unreadable .*Delete"):
        cache.read(path)
    error = cache.unusable(path, "does not fit")
    assert str(error) == f"Checkpoint {path} does not fit. Delete {path} and it will be retrained."
