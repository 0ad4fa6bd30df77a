"""Summarise a sweep folder again (an interrupted sweep's, say), with the ``summary`` settings its ``multirun.yaml``
recorded: ``python -m privacy_attacks.summarise multirun/attack/<time>`` writes ``summary.csv``, ``summary.md``
(and ``summary_seeds.csv``), prints the tables and draws the figures, as the end of the sweep would have: the jobs
an earlier sweep into the same folder left and the last one did not write again are left out, as there."""

from __future__ import annotations

import argparse
from pathlib import Path

from omegaconf import OmegaConf

from privacy_attacks.callbacks.sweep_summary import read_earlier, summarise


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m privacy_attacks.summarise", description=__doc__)
    parser.add_argument("sweep_dir", type=Path, help="the sweep's folder (it holds multirun.yaml)")
    folder = parser.parse_args(argv).sweep_dir
    if not (folder / "multirun.yaml").exists():
        raise SystemExit(f"error: {folder} holds no multirun.yaml: not the folder of a sweep.")
    summary = OmegaConf.select(OmegaConf.load(folder / "multirun.yaml"), "summary", default=None)
    earlier = read_earlier(folder)
    if not summarise(folder, summary, earlier):
        left_out = f" ({len(earlier)} of an earlier sweep into the folder are left out)" if earlier else ""
        raise SystemExit(f"error: no job of {folder}'s last sweep has finished (no metrics.json){left_out}.")


if __name__ == "__main__":
    main()
