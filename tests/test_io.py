"""Atomic writes: a reader never sees a half-written cache file or metrics.json."""

import json

import pytest
import torch

from privacy_attacks.io import atomic_torch_save, read_json, write_json


def test_atomic_torch_save_round_trips_and_leaves_no_temporary_file(tmp_path):
    path = atomic_torch_save(tmp_path / "sub" / "cache.pt", {"w": torch.arange(3)})
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.arange(3))
    assert [p.name for p in path.parent.iterdir()] == ["cache.pt"]


def test_an_interrupted_save_keeps_the_old_file(tmp_path):
    path = atomic_torch_save(tmp_path / "cache.pt", {"version": 1})

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        atomic_torch_save(path, {"version": 2, "bad": Unpicklable()})
    assert torch.load(path, weights_only=True) == {"version": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["cache.pt"]


def test_write_json_writes_nan_as_null(tmp_path):
    path = write_json(tmp_path / "metrics.json", {"a": 1.5, "b": float("nan")})
    assert json.loads(path.read_text()) == {"a": 1.5, "b": None}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_infinities_are_valid_json_and_read_back_as_numbers(tmp_path):
    """DP-SGD without noise spends ε = inf: strict JSON readers (jq, JavaScript) must read the file too."""
    path = write_json(tmp_path / "metrics.json", {"privacy/epsilon": float("inf"), "low": float("-inf"), "a": 2})

    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    assert json.loads(path.read_text(), parse_constant=refuse) == {"privacy/epsilon": "inf", "low": "-inf", "a": 2}
    assert read_json(path) == {"privacy/epsilon": float("inf"), "low": float("-inf"), "a": 2}
