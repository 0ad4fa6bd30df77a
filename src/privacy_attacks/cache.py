"""The on-disk cache of trained models (targets, shadow models, inversion decoders): one policy for all.

- **Key**: a cached file is named ``<cache_dir>/<prefix>-<key>.pt``, where the key is the first 12 hex
  digits of the SHA-256 of a JSON *spec* (everything that determines the file's content, as plain data,
  serialised with sorted keys). The same spec always names the same file.
- **Lock**: a missing file is built once, under a file lock (``<file>.lock``), even when several jobs of
  a multirun ask for it at the same moment; the others wait and then load it. The lock is filelock's
  ``FileLock`` (``flock``), or with ``PRIVACY_ATTACKS_LOCK=soft`` its ``SoftFileLock`` (a marker file
  created exclusively), for shared filesystems whose ``flock`` does not reach across nodes (docs/sweeps.md).
- **Lock timeout**: a job waits at most ``$PRIVACY_ATTACKS_LOCK_TIMEOUT`` seconds (default 24 hours) for another
  job's lock, then stops with a message naming the lock file (a ``soft`` lock left behind by a killed job never
  goes away by itself).
- **Atomic save**: a file is written to a temporary name and renamed, so no reader sees half of it.
- **Library versions**: every file records the versions of the libraries that determine trained weights (torch,
  Lightning, Opacus); a file written under other versions is refused with a message naming both (the same recipe
  and seed can train other weights under other kernels), never silently reused.
- **Unusable file**: a cached file that cannot be read or does not fit what is asked of it is a
  :class:`~privacy_attacks.errors.CheckpointError` that names the file and says to delete it (it is
  never silently rebuilt: a wrong cache is something to look at).

Usage::

    path = cache_path(cache_dir, "target", spec)
    net, cached = provision(path, create=train_and_save, load=load_checkpoint)
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import inspect
import json
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import torch
from filelock import BaseFileLock, FileLock, SoftFileLock, Timeout

from privacy_attacks.errors import CheckpointError, ConfigError, require_choice
from privacy_attacks.io import atomic_torch_save

T = TypeVar("T")
KEY_LENGTH = 12  # hex digits of the spec's SHA-256 in a file name
LOCK_ENV = "PRIVACY_ATTACKS_LOCK"
LOCKS: dict[str, type[BaseFileLock]] = {"file": FileLock, "soft": SoftFileLock}
LOCK_TIMEOUT_ENV = "PRIVACY_ATTACKS_LOCK_TIMEOUT"
DEFAULT_LOCK_TIMEOUT_S = 24 * 3600.0
# The libraries whose versions change what a cached file holds (kernels, training loops, DP-SGD's noise).
VERSIONED_LIBRARIES = ("torch", "lightning", "opacus")
STAMP = "privacy_attacks_cache"  # the key of the metadata every cached file carries beside its content
# The CPU thread count every cache key made before the count entered them was made with (torch's default on the
# 2-core machine the docs' numbers come from); at this count the entry stays out, so those files keep their names.
UNKEYED_CPU_THREADS = 2


def cache_key(spec: Mapping[str, Any]) -> str:
    """The first 12 hex digits of the SHA-256 of ``spec`` as JSON with sorted keys."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:KEY_LENGTH]


def cache_path(cache_dir: str | Path, prefix: str, spec: Mapping[str, Any]) -> Path:
    """``<cache_dir>/<prefix>-<cache_key(spec)>.pt``."""
    return Path(cache_dir) / f"{prefix}-{cache_key(spec)}.pt"


def device_entry(device: str) -> dict[str, Any]:
    """What of the training device enters a cached model's key: its type when not the CPU (other kernels, other
    rounding); on the CPU the number of threads torch reduces with, which changes the order of the sums and so the
    weights, left out at :data:`UNKEYED_CPU_THREADS`."""
    if device != "cpu":
        return {"device": device}
    threads = torch.get_num_threads()
    return {} if threads == UNKEYED_CPU_THREADS else {"cpu_threads": threads}


def tensor_digest(tensor: torch.Tensor) -> str:
    """16 hex digits of the SHA-256 of a tensor's bytes (on the CPU): a content key of data a file was fitted to."""
    return hashlib.sha256(tensor.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]


def weights_digest(module: torch.nn.Module) -> str:
    """16 hex digits of the SHA-256 of a module's ``state_dict`` (names and values, in order): the content key of a
    network that a derived file (an inversion decoder) was fitted to, whatever file or device it came from."""
    digest = hashlib.sha256()
    for name, value in module.state_dict().items():
        digest.update(name.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def code_digest(obj: Any) -> str | None:
    """16 hex digits of the SHA-256 of the source file that defines ``obj`` (a class or function), or None where the
    source cannot be read: what keys a cached model to a researcher's own network code, so that editing the file
    gives its models other files instead of the old weights in the new code."""
    module = inspect.getmodule(obj)
    try:
        return None if module is None else hashlib.sha256(inspect.getsource(module).encode()).hexdigest()[:16]
    except (OSError, TypeError):
        return None


def lock_type() -> type[BaseFileLock]:
    """The lock named by ``$PRIVACY_ATTACKS_LOCK``: ``file`` (the default: ``FileLock``, ``flock`` on POSIX)
    or ``soft`` (``SoftFileLock``: needs only an atomic exclusive create)."""
    kind = os.environ.get(LOCK_ENV) or "file"
    require_choice(kind, LOCKS, LOCK_ENV)
    return LOCKS[kind]


def lock_timeout() -> float:
    """Seconds to wait for another job's lock: ``$PRIVACY_ATTACKS_LOCK_TIMEOUT`` (a positive number), else 24 hours."""
    value = os.environ.get(LOCK_TIMEOUT_ENV) or str(DEFAULT_LOCK_TIMEOUT_S)
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise ConfigError(f"{LOCK_TIMEOUT_ENV}={value!r} is not allowed: it must be a positive number of seconds.")
    return seconds


@contextmanager
def locked(path: Path) -> Iterator[Path]:
    """Hold the lock of the cached file ``path`` (its folder is created if missing); yields ``path``.

    :class:`CheckpointError` naming the lock file after :func:`lock_timeout` seconds of waiting."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = lock_type()(f"{path}.lock", timeout=lock_timeout())
    try:
        lock.acquire()
    except Timeout:
        raise CheckpointError(
            f"Waited {lock.timeout:.0f} s for the lock {lock.lock_file} of {path}: another job may still be building "
            f"it, or a job that was killed left the lock behind (a {LOCK_ENV}=soft lock stays until deleted). If no "
            f"job is running, delete {lock.lock_file}; {LOCK_TIMEOUT_ENV} sets the wait."
        ) from None
    try:
        yield path
    finally:
        lock.release()


def provision(path: Path, create: Callable[[Path], T], load: Callable[[Path], T]) -> tuple[T, bool]:
    """``load(path)`` if the file exists (no lock: cached files are written whole, by a rename); else, under the lock
    of ``path``, ``load(path)`` if another job wrote it meanwhile, else ``create(path)``, which builds the object and
    writes the file (with :func:`save`). Either way what an interrupted fit left beside the file goes
    (:func:`discard_partial`). Returns the object and whether it came from the cache."""
    if Path(path).exists():
        return load(path), discard_partial(path)
    with locked(path):
        if Path(path).exists():
            return load(path), discard_partial(path)
        created = create(path)
        discard_partial(path)
        return created, False


def discard_partial(path: Path) -> bool:
    """Remove what an interrupted fit of the file ``path`` left beside it (:func:`partial_path`, and that file's
    half-written next version), once ``path`` is there; returns True."""
    partial = partial_path(path)
    for left in (partial, partial.with_name(f"{partial.name}.tmp")):
        left.unlink(missing_ok=True)
    return True


def library_versions() -> dict[str, str]:
    """The installed versions of :data:`VERSIONED_LIBRARIES` (``"absent"`` for one not installed)."""
    versions = {}
    for name in VERSIONED_LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def save(path: Path, obj: Any) -> Path:
    """``torch.save`` of ``obj`` with the :func:`library_versions` it was made under, atomically (tensors and plain
    data only, so :func:`read` can load it with ``weights_only``)."""
    return atomic_torch_save(path, {STAMP: {"versions": library_versions()}, "content": obj})


def partial_path(path: Path) -> Path:
    """Where the fit of the model(s) to be cached at ``path`` keeps its state until they are: ``<path>.partial``
    (written after an epoch, read when the same fit runs again after an interruption, removed once ``path`` is)."""
    return Path(f"{path}.partial")


def unusable(path: Path, problem: str) -> CheckpointError:
    """The error for a cached file that cannot be used: ``Checkpoint <path> <problem>. Delete <path> ...``."""
    return CheckpointError(f"Checkpoint {path} {problem}. Delete {path} and it will be retrained.")


def load_state(path: Path, module: torch.nn.Module, what: str) -> torch.nn.Module:
    """``module`` with the weights cached at ``path`` (:func:`read`); :func:`unusable` (``does not fit the
    <what>``) if they are another network's."""
    state = read(path)
    try:
        module.load_state_dict(state)
    except Exception as error:  # noqa: BLE001 - a file of another layout means the same to the user
        raise unusable(path, f"does not fit the {what} ({type(error).__name__})") from error
    return module


def read(path: Path) -> Any:
    """The content of the cached file ``path`` (on the CPU); :func:`unusable` if it cannot be read, was written
    without its library versions (by an earlier release) or under other versions than the installed ones."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unreadable file means the same to the user
        raise unusable(path, f"is corrupt or unreadable ({type(error).__name__})") from error
    if not isinstance(saved, dict) or STAMP not in saved or "content" not in saved:
        raise unusable(path, "was cached without the library versions it was made under (an earlier release)")
    made, here = saved[STAMP].get("versions", {}), library_versions()
    if made != here:
        differ = ", ".join(
            f"{name} {made.get(name)} there, {here[name]} here" for name in here if made.get(name) != here[name]
        )
        raise unusable(path, f"was made under other library versions ({differ}), which can change trained weights")
    return saved["content"]
