"""The on-disk cache of trained models (targets, shadow models, inversion decoders): one policy for all.

- **Key**: a cached file is named ``<cache_dir>/<prefix>-<key>.pt``, where the key is the first 12 hex
  digits of the SHA-256 of a JSON *spec* (everything that determines the file's content, as plain data,
  serialised with sorted keys). The same spec always names the same file.
- **Lock**: a missing file is built once, under a file lock (``<file>.lock``), even when several jobs of
  a multirun ask for it at the same moment; the others wait and then load it. The lock is filelock's
  ``FileLock`` (``flock``), or with ``PRIVACY_ATTACKS_LOCK=soft`` its ``SoftFileLock`` (a marker file
  created exclusively), for shared filesystems whose ``flock`` does not reach across nodes (docs/sweeps.md).
- **Atomic save**: a file is written to a temporary name and renamed, so no reader sees half of it.
- **Unusable file**: a cached file that cannot be read or does not fit what is asked of it is a
  :class:`~privacy_attacks.errors.CheckpointError` that names the file and says to delete it (it is
  never silently rebuilt: a wrong cache is something to look at).

Usage::

    path = cache_path(cache_dir, "target", spec)
    net, cached = provision(path, create=train_and_save, load=load_checkpoint)
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import torch
from filelock import BaseFileLock, FileLock, SoftFileLock

from privacy_attacks.errors import CheckpointError, require_choice
from privacy_attacks.io import atomic_torch_save

T = TypeVar("T")
KEY_LENGTH = 12  # hex digits of the spec's SHA-256 in a file name
LOCK_ENV = "PRIVACY_ATTACKS_LOCK"
LOCKS: dict[str, type[BaseFileLock]] = {"file": FileLock, "soft": SoftFileLock}


def cache_key(spec: Mapping[str, Any]) -> str:
    """The first 12 hex digits of the SHA-256 of ``spec`` as JSON with sorted keys."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:KEY_LENGTH]


def cache_path(cache_dir: str | Path, prefix: str, spec: Mapping[str, Any]) -> Path:
    """``<cache_dir>/<prefix>-<cache_key(spec)>.pt``."""
    return Path(cache_dir) / f"{prefix}-{cache_key(spec)}.pt"


def lock_type() -> type[BaseFileLock]:
    """The lock named by ``$PRIVACY_ATTACKS_LOCK``: ``file`` (the default: ``FileLock``, ``flock`` on POSIX)
    or ``soft`` (``SoftFileLock``: needs only an atomic exclusive create)."""
    kind = os.environ.get(LOCK_ENV) or "file"
    require_choice(kind, LOCKS, LOCK_ENV)
    return LOCKS[kind]


@contextmanager
def locked(path: Path) -> Iterator[Path]:
    """Hold the lock of the cached file ``path`` (its folder is created if missing); yields ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with lock_type()(f"{path}.lock"):
        yield path


def provision(path: Path, create: Callable[[Path], T], load: Callable[[Path], T]) -> tuple[T, bool]:
    """Under the lock of ``path``: ``load(path)`` if the file exists, else ``create(path)``, which builds
    the object and writes the file (with :func:`save`). Returns the object and whether it came from the cache."""
    with locked(path):
        if Path(path).exists():
            return load(path), True
        return create(path), False


def save(path: Path, obj: Any) -> Path:
    """``torch.save(obj, path)`` atomically (tensors only, so :func:`read` can load it with ``weights_only``)."""
    return atomic_torch_save(path, obj)


def unusable(path: Path, problem: str) -> CheckpointError:
    """The error for a cached file that cannot be used: ``Checkpoint <path> <problem>. Delete <path> ...``."""
    return CheckpointError(f"Checkpoint {path} {problem}. Delete {path} and it will be retrained.")


def read(path: Path) -> Any:
    """The content of the cached file ``path`` (on the CPU); :func:`unusable` if it cannot be read."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unreadable file means the same to the user
        raise unusable(path, f"is corrupt or unreadable ({type(error).__name__})") from error
