"""The per-job table of ``summary.md``: every key the sweep varies is a column, beside the configured ones."""

from __future__ import annotations

from pathlib import Path

from privacy_attacks.callbacks.sweep_summary import collect_sweep, summarise, swept_keys
from tests.callbacks.test_sweep_summary import make_sweep


def test_every_swept_key_is_a_column_of_summary_md(tmp_path: Path):
    jobs = [
        ([f"model@target={model}", f"loss={loss}", "experiment=stealing_budget", "seed=0"], {"student/acc": acc})
        for (model, loss), acc in zip(
            [("lenet5", "kl"), ("lenet5", "mse"), ("cnn", "kl"), ("cnn", "mse")], [0.9, 0.8, 0.7, 0.6], strict=True
        )
    ]
    sweep = make_sweep(tmp_path / "sweep", jobs)
    assert swept_keys(*collect_sweep(sweep)) == ["model@target", "loss"]  # experiment and seed are the same in all
    summarise(sweep, {"metric": "student/acc", "columns": ["student/acc"]})
    lines = (sweep / "summary.md").read_text().splitlines()
    assert lines[0] == "| job | model@target | loss | student/acc |"
    assert lines[2:6] == [
        "| 0 | lenet5 | kl | 0.9 |",
        "| 1 | lenet5 | mse | 0.8 |",
        "| 2 | cnn | kl | 0.7 |",
        "| 3 | cnn | mse | 0.6 |",
    ]
    summarise(sweep, {"metric": "student/acc", "columns": ["loss", "student/acc"]})  # a swept key listed: once
    assert (sweep / "summary.md").read_text().splitlines()[0] == "| job | model@target | loss | student/acc |"


def test_a_configured_column_no_job_has_is_left_out(tmp_path: Path):
    """A key an experiment fixes (``method=idlg`` in its file) is in no job's row: no empty column for it."""
    jobs = [([f"seed={seed}"], {"recon/psnr": 20.0 + seed}) for seed in range(3)]
    sweep = make_sweep(tmp_path / "sweep", jobs)
    summarise(sweep, {"metric": "recon/psnr", "columns": ["method", "batch_size", "seed", "recon/psnr"]})
    assert (sweep / "summary.md").read_text().splitlines()[0] == "| job | seed | recon/psnr |"


def test_without_configured_columns_the_table_shows_the_swept_keys_and_every_metric(tmp_path: Path):
    """``train.py -m`` (no ``summary.columns``): overrides fixed for every job stay in ``summary.csv`` only."""
    jobs = [
        (["data=synthetic", "threads=1", f"model.max_epochs={epochs}"], {"val/acc": acc, "fit_time_s": 3.0})
        for epochs, acc in ((1, 0.5), (2, 0.6))
    ]
    sweep = make_sweep(tmp_path / "sweep", jobs)
    summarise(sweep, {"metric": "val/acc"})
    assert (sweep / "summary.md").read_text().splitlines()[0] == "| job | model.max_epochs | val/acc |"
    assert (sweep / "summary.csv").read_text().splitlines()[0] == "job,data,threads,model.max_epochs,val/acc,fit_time_s"
