"""``python -m privacy_attacks.lab``: the lecture's labs in one command, written up as one report.

Each stage of ``conf/lab.yaml`` is a ``train.py`` run or an ``attack.py`` multirun of an experiment config,
run as its own process into ``<lab_dir>/<stage>/``. ``state.json`` records each finished stage, so a lab
that was interrupted picks up at the first unfinished stage when it is started again with the same
``lab_dir``. At the end (and after every stage) ``report.md`` and a self-contained ``report.html`` gather the
tables (mean ± 95% interval when ``seeds`` > 1), every sweep figure, the command behind each stage, the
versions and the device.

``data=<name>``, ``model=<name>`` and ``net=<name>`` (null by default: each stage's own) are passed on to every
stage: ``data=`` as it is, the model as ``train.py``'s ``model=`` and ``attack.py``'s ``model@target=``, the network as
``net@model.net=`` and ``net@target.net=`` (:func:`stage_group`); so are the lab's settings of their keys
(``data.num_classes=3``, ``model.members=500``, ``net.width=32``: :data:`STAGE_KEYS`) and its config search path
(``--config-dir``, ``hydra.searchpath``), where a researcher's own configs are found.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from privacy_attacks.callbacks.progress import format_duration
from privacy_attacks.errors import ConfigError, require_int
from privacy_attacks.harness import run_device
from privacy_attacks.io import read_json, write_atomically
from privacy_attacks.report import Stage, write_report

log = logging.getLogger("privacy_attacks.lab")
ROOT = Path(__file__).resolve().parents[2]
# The lab's options passed on to every stage, and the config group each script reads them from: train.py trains
# the model= recipe (on the net= network), attack.py attacks it as its target.
FORWARDED = ("data", "model", "net")
# Where each script has the nodes the lab's data=, model= and net= options fill (the option goes there:
# model@target=, net@model.net=), and so the keys they hold (data.num_classes=3, model.members=500,
# net.width=32 on the lab's command line): train.py on the recipe it trains, attack.py on its target's.
STAGE_KEYS = {
    "data": {"train.py": "data", "attack.py": "data"},
    "model": {"train.py": "model", "attack.py": "target"},
    "net": {"train.py": "model.net", "attack.py": "target.net"},
}
FORWARDED_KEY = re.compile(r"^(?P<prefix>[+~]*)(?P<group>data|model|net)\.(?P<key>.+)$")
# Hydra's config sources a user adds (--config-dir, hydra.searchpath), which every stage searches too.
ADDED_SOURCES = ("command-line", "hydra.searchpath in command-line")


@dataclass(frozen=True)
class Forwarded:
    """What the lab passes on to every stage beside its options: its ``data.``/``model.``/``net.`` ``overrides``, as
    given, and its added config ``searchpath`` (absolute ``file://`` or ``pkg://`` locations)."""

    overrides: tuple[str, ...] = ()
    searchpath: tuple[str, ...] = ()

    def arguments(self, script: str) -> list[str]:
        """The stage's arguments: each override under the stage's key (:data:`STAGE_KEYS`), then the search path."""
        moved = []
        for override in self.overrides:
            match = FORWARDED_KEY.match(override)
            # +key (a key added to the lab's null node) may be declared in the stage: there it is set, not added
            prefix = "++" if match["prefix"] == "+" else match["prefix"]
            moved.append(f"{prefix}{STAGE_KEYS[match['group']][script]}.{match['key']}")
        searchpath = [f"hydra.searchpath=[{','.join(self.searchpath)}]"] if self.searchpath else []
        return [*moved, *searchpath]


def stage_command(
    stage: DictConfig,
    seeds: int,
    trainer: str,
    stage_dir: Path,
    choices: Mapping[str, str] | None = None,
    forwarded: Forwarded = Forwarded(),
) -> list[str]:
    """The command line of one stage (the script, its overrides, the lab's ``choices`` of data and model and the
    settings and search path it ``forwarded``, the seeds, the trainer, its folder)."""
    script = str(stage.script)
    chosen = [f"{stage_group(script, group)}={value}" for group, value in (choices or {}).items()]
    args = [script, *[str(o) for o in stage.overrides], *chosen, *forwarded.arguments(script)]
    args += [f"trainer={trainer}", "logger=none"]
    if stage.script == "train.py":
        return [*args, f"hydra.run.dir={stage_dir}"]
    seed_values = ",".join(str(s) for s in range(seeds))
    return [args[0], "-m", *args[1:], f"seed={seed_values}", f"hydra.sweep.dir={stage_dir}"]


def stage_group(script: str, group: str) -> str:
    """The config group of ``script`` that takes the lab's ``group`` option (``model`` -> ``model@target`` and
    ``net`` -> ``net@target.net`` for ``attack.py``)."""
    path = STAGE_KEYS.get(group, {}).get(script, group)
    return group if path == group else f"{group}@{path}"


def selected_stages(cfg: DictConfig) -> list[str]:
    """The stage names to run, in the config's order; :class:`ConfigError` for an unknown one in ``only``."""
    names = list(cfg.stages)
    if cfg.only is None:
        return names
    unknown = [name for name in cfg.only if name not in names]
    if unknown:
        raise ConfigError(f"only={list(cfg.only)}: no stage {unknown} (stages: {', '.join(names)}).")
    return [name for name in names if name in cfg.only]


def load_state(lab_dir: Path) -> dict[str, Any]:
    path = lab_dir / "state.json"
    return read_json(path) if path.exists() else {}


def save_state(lab_dir: Path, state: dict[str, Any]) -> None:
    """Write ``state.json`` atomically, through a temporary file unique to this process (two labs never collide)."""
    write_atomically(lab_dir / "state.json", lambda tmp: tmp.write_text(json.dumps(state, indent=1)))


def hydra_choices(cfg: DictConfig) -> Mapping[str, Any] | None:
    """The config-group options the lab was composed with: Hydra's runtime record (or the config's own ``hydra``
    node, when composed with ``return_hydra_config=True``); None when neither is there."""
    choices = OmegaConf.select(cfg, "hydra.runtime.choices")
    if choices is None and HydraConfig.initialized():
        choices = HydraConfig.get().runtime.choices
    return choices


def trainer_choice(cfg: DictConfig) -> str:
    """The ``trainer=`` option the lab was started with (``cpu``, ``gpu``), passed on to every stage."""
    choices = hydra_choices(cfg)
    if choices is not None:
        return choices.get("trainer", "cpu")
    return "gpu" if run_device(cfg.trainer).type == "cuda" else "cpu"


def lab_choices(cfg: DictConfig) -> dict[str, str]:
    """The ``data=``, ``model=`` and ``net=`` options the lab was started with, passed on to every stage; one left null
    (the default) is absent: each stage keeps its own."""
    choices = hydra_choices(cfg)
    if choices is None:
        if any(cfg.get(group) is not None for group in FORWARDED):
            raise ConfigError(
                "the lab reads data=, model= and net= from Hydra's record of its options: start it with "
                "python -m privacy_attacks.lab (or compose conf/lab.yaml with return_hydra_config=True)."
            )
        return {}
    return {group: str(choices[group]) for group in FORWARDED if choices.get(group) is not None}


def lab_forwarded(cfg: DictConfig) -> Forwarded:
    """The lab's command-line settings of ``data.``, ``model.`` and ``net.`` keys and its added config sources, from
    Hydra's record (none without one)."""
    record = OmegaConf.select(cfg, "hydra")
    if record is None and HydraConfig.initialized():
        record = HydraConfig.get()
    if record is None:
        return Forwarded()
    overrides = tuple(str(o) for o in record.overrides.task if FORWARDED_KEY.match(str(o)))
    searchpath = []
    for source in record.runtime.get("config_sources") or []:
        if source.provider in ADDED_SOURCES:
            path = source.path if source.schema != "file" else str(Path(source.path).resolve())
            searchpath.append(f"{source.schema}://{path}")
    return Forwarded(overrides, tuple(searchpath))


class Terminated(BaseException):
    """The lab received SIGTERM (raised in its main thread while a stage runs, so that the stage is stopped too); a
    ``BaseException``, like ``KeyboardInterrupt``, so that no ``except Exception`` takes it for an error."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated


def run_stage(command: list[str], log_file: Path, grace_s: float = 60.0, settle_s: float = 5.0) -> int:
    """Run one stage's process, its output appended to ``log_file`` below a line naming the attempt; print Hydra's job
    lines as they come (progress). A Ctrl-C or SIGTERM of the lab stops the stage as well (:func:`stop_stage`) before
    it goes on up: no stage outlives the lab to write into the folder its rerun starts afresh."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    in_main_thread = _main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if in_main_thread else None  # before the stage starts
    try:
        with (
            open(log_file, "a") as handle,
            subprocess.Popen(
                [sys.executable, *command],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            ) as process,
        ):
            try:
                handle.write(f"===== {time.strftime('%Y-%m-%d %H:%M:%S')}: python {' '.join(command)}\n")
                for line in process.stdout:
                    handle.write(line)
                    if "[HYDRA] \t#" in line or line.startswith("error:"):
                        print("    " + line.split("\t", 1)[-1].strip(), flush=True)
            except (KeyboardInterrupt, Terminated) as stop:
                handle.write(
                    stop_stage(
                        process,
                        signal.SIGINT if isinstance(stop, KeyboardInterrupt) else signal.SIGTERM,
                        grace_s,
                        settle_s,
                    )
                )
                raise
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
    return process.returncode


def stop_stage(process: subprocess.Popen, stop: int, grace_s: float, settle_s: float = 5.0) -> str:
    """Stop a stage's ``process`` the way the lab was stopped (``stop``: SIGINT or SIGTERM, on which a run saves what
    it finished and exits), unless a Ctrl-C at the terminal already reached it (SIGINT) and it ends within
    ``settle_s``; kill it after ``grace_s`` more seconds. A second Ctrl-C or SIGTERM meanwhile is ignored (the
    stage is being stopped already); the stage never outlives this call. Returns the rest of its output."""
    steps = [(None, settle_s)] if stop == signal.SIGINT else []
    steps += [(stop, grace_s), (signal.SIGKILL, None)]
    ignored = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)} if _main_thread() else {}
    rest = []
    try:
        for signal_to_send, wait_s in steps:
            if signal_to_send is not None and process.poll() is None:
                process.send_signal(signal_to_send)
            try:
                out, _ = process.communicate(timeout=wait_s)
                rest.append(out or "")
                break
            except subprocess.TimeoutExpired:
                continue
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for number, handler in ignored.items():
            signal.signal(number, signal.SIG_DFL if handler is None else handler)
    return "".join(rest)


def _main_thread() -> bool:
    """Whether this is the main thread, the only one where signal handlers can be set."""
    return threading.current_thread() is threading.main_thread()


def run_lab(cfg: DictConfig) -> dict[str, Any]:
    """Run the stages not yet finished in ``cfg.lab_dir``; write the report; return the state."""
    require_int(cfg.seeds, "seeds")
    run_device(cfg.trainer)  # trainer=gpu without a GPU: stop before any stage
    names = selected_stages(cfg)
    lab_dir = Path(cfg.lab_dir)
    lab_dir.mkdir(parents=True, exist_ok=True)
    trainer = trainer_choice(cfg)
    choices, forwarded = lab_choices(cfg), lab_forwarded(cfg)
    state = load_state(lab_dir)
    stages = []
    running = None  # the stage whose process runs now
    try:
        for index, name in enumerate(names, 1):
            stage_dir = lab_dir / name
            command = stage_command(cfg.stages[name], cfg.seeds, trainer, stage_dir, choices, forwarded)
            shown = "python " + " ".join(command)
            pictures = cfg.stages[name].get("pictures")
            stages.append(Stage(name, str(cfg.stages[name].title), shown, stage_dir, pictures))
            done = state.get(name, {})
            if done.get("status") == "done" and done.get("command") == shown:
                took = format_duration(done["seconds"])
                print(f"[{index}/{len(names)}] {name}: finished before ({took}), not run again")
                continue
            print(f"[{index}/{len(names)}] {name}: {shown}", flush=True)
            if stage_dir.exists():  # an earlier or interrupted attempt: its jobs must not mix with this run's
                shutil.rmtree(stage_dir)
            start = time.perf_counter()
            running = name
            status = run_stage(command, lab_dir / f"{name}.log")
            running = None
            seconds = time.perf_counter() - start
            state[name] = {
                "status": "done" if status == 0 else f"failed ({status})",
                "seconds": seconds,
                "command": shown,
            }
            save_state(lab_dir, state)
            outcome = "done" if status == 0 else f"FAILED (exit {status}; see {lab_dir / f'{name}.log'})"
            print(f"[{index}/{len(names)}] {name}: {outcome} in {format_duration(seconds)}", flush=True)
            write_report(lab_dir, stages, state, {"accelerator": cfg.trainer.accelerator}, choices)
    except (KeyboardInterrupt, Terminated, SIGTERMException) as stop:  # SIGTERMException: between stages
        how = "interrupted" if isinstance(stop, KeyboardInterrupt) else "stopped by SIGTERM"
        where = f"during stage {running} (the stage is stopped too)" if running else "between stages"
        print(
            f"\nerror: {how} {where}: the stages finished before are kept; rerun with lab_dir={lab_dir} to go on "
            "from where it stopped.",
            file=sys.stderr,
        )
        raise SystemExit(130 if isinstance(stop, KeyboardInterrupt) else 143) from None
    report = write_report(lab_dir, stages, state, {"accelerator": cfg.trainer.accelerator}, choices)
    total = sum(state[s.name]["seconds"] for s in stages if s.name in state)
    print(f"Lab report: {report} and {report.with_suffix('.html')} (stages took {format_duration(total)} in all)")
    failed = [s.name for s in stages if state.get(s.name, {}).get("status") != "done"]
    if failed:
        raise SystemExit(f"error: stage(s) {', '.join(failed)} failed; rerun with lab_dir={lab_dir} to retry them.")
    return state


@hydra.main(version_base="1.3", config_path=str(ROOT / "conf"), config_name="lab")
def main(cfg: DictConfig) -> None:
    from privacy_attacks.cli import run_reporting_errors

    run_reporting_errors(run_lab, cfg)


if __name__ == "__main__":
    from privacy_attacks.cli import config_hints

    with config_hints(ROOT / "conf", "lab"):
        main()
