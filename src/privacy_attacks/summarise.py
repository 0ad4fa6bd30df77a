"""Summarise a sweep folder again (an interrupted sweep's, say), with the ``summary`` settings its ``multirun.yaml``
recorded: ``python -m privacy_attacks.summarise multirun/attack/<time>`` writes ``summary.csv``, ``summary.md``
(and ``summary_seeds.csv``), prints the tables and draws the figures, as the end of the sweep would have."""

from __future__ import annotations

import argparse
from pathlib import Path

from omegaconf import OmegaConf

from privacy_attacks.callbacks.sweep_summary import summarise


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m privacy_attacks.summarise", description=__doc__)
    parser.add_argument("sweep_dir", type=Path, help="the sweep's folder (it holds multirun.yaml)")
    folder = parser.parse_args(argv).sweep_dir
    if not (folder / "multirun.yaml").exists():
        raise SystemExit(f"error: {folder} holds no multirun.yaml: not the folder of a sweep.")
    summary = OmegaConf.select(OmegaConf.load(folder / "multirun.yaml"), "summary", default=None)
    if not summarise(folder, summary):
        raise SystemExit(f"error: no job of {folder} has finished (no metrics.json).")


if __name__ == "__main__":
    main()
