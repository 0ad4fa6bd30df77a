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
from privacy_attacks.errors import CheckpointError, ConfigError
from privacy_attacks.targets import checkpoint_path

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


def test_cache_file_names_are_pinned(tmp_path: Path):
    """The names of existing cache files: a change here would orphan every cached target, shadow set and decoder."""
    assert checkpoint_path(RECIPE, DATA, tmp_path, "target").name == "target-bcd14cca1cfd.pt"
    images = torch.arange(4 * 28 * 28, dtype=torch.float32).view(4, 1, 28, 28) / 3136
    labels = torch.tensor([0, 1, 2, 3])
    subsets = torch.tensor([[0, 1], [2, 3]])
    assert shadow_cache_path(tmp_path, RECIPE, images, labels, subsets, [3, 4]).name == "shadows-2b7775713ca9.pt"
    settings = {"train_images": 512, "epochs": 1, "batch_size": 64, "lr": 0.001, "width": 64, "seed": 0}
    path = inversion_cache_path(tmp_path, Path("elsewhere/target-0123456789ab.pt"), "conv2", settings)
    # format 3: the batch-normalised decoder; a cached decoder of the earlier layout (format 2) is not reused
    assert path.name == "inversion-3af1772babb4.pt"


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
