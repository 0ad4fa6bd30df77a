"""Glue for the thin ``train.py`` / ``attack.py`` scripts: user errors print one clear line, no traceback."""

from __future__ import annotations

import contextlib
import difflib
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from privacy_attacks.errors import UserError

log = logging.getLogger("privacy_attacks")


KEPT = "what had finished is kept (finished jobs and their sweep's partial summary, completely cached models)"


def run_reporting_errors(run: Callable[[DictConfig], Any], cfg: DictConfig) -> Any:
    """Call ``run(cfg)``; a :class:`UserError` or a config error exits with status 2 and its message; Ctrl-C with
    status 130 and SIGTERM (Lightning's ``SIGTERMException``, which would exit 0) with 143, each with one line."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    try:
        return run(cfg)
    except (UserError, OmegaConfBaseException) as error:
        _exit_with(one_line(error), 2)
    except KeyboardInterrupt:
        _exit_with(f"interrupted (Ctrl-C); {KEPT}.", 130)
    except SIGTERMException:
        _exit_with(f"stopped by SIGTERM; {KEPT}.", 143)


def _exit_with(message: str, status: int) -> None:
    log.error("%s", message)
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(status) from None


def one_line(error: Exception) -> str:
    """A user error's message; an OmegaConf error's first line with the key it is about (its other lines dropped),
    and what to do for a value a config leaves to the user (``???``)."""
    if not isinstance(error, OmegaConfBaseException):
        return str(error)
    first = (str(error).splitlines() or [type(error).__name__])[0].rstrip()
    missing = "Missing mandatory value: "
    if missing in first:  # the value itself, or an interpolation to it
        key = first.partition(missing)[2]
        return f"{missing}{key}: set {key}=<value> on the command line or in the config file that leaves it ???."
    key = getattr(error, "full_key", None)  # the key the error is about, when its first line does not name it
    return f"{first} (at {key})" if key and key not in first else first


@contextlib.contextmanager
def config_hints(config_dir: Path, config_name: str) -> Iterator[None]:
    """Around a script's Hydra ``main()``: when Hydra has reported an error and exits with status 1, add a line for
    each command-line key or config option that names nothing, with the declared one it most resembles
    (:func:`override_hints`). Hydra's own message suggests ``+tv_lamda=...`` for a misspelt ``tv_lambda``."""
    try:
        yield
    except SystemExit as exit:
        if exit.code == 1:
            for line in override_hints(config_dir, config_name, sys.argv[1:]):
                print(f"hint: {line}", file=sys.stderr)
        raise


def override_hints(config_dir: Path, config_name: str, argv: Sequence[str]) -> list[str]:
    """One line per override of the command line ``argv`` that changes a key the composed config does not have
    (``tv_lamda=1e-3``) or picks an option its group does not have (``attack=inversions``), naming the closest
    declared key or option; nothing for the others, nor when the command line cannot be read."""
    try:
        return _override_hints(config_dir, config_name, argv)
    except Exception:  # a hint is a courtesy: Hydra has already said what went wrong
        return []


def _override_hints(config_dir: Path, config_name: str, argv: Sequence[str]) -> list[str]:
    from hydra import compose, initialize_config_dir
    from hydra._internal.utils import get_args_parser
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.object_type import ObjectType
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import OverrideType

    args = get_args_parser().parse_args(list(argv))
    config_name = args.config_name or config_name
    overrides = OverridesParser.create().parse_overrides(args.overrides)
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(config_dir.resolve())):
        repository = GlobalHydra.instance().config_loader().repository
        groups, keys, lines = [], [], []
        for override in overrides:
            if override.is_hydra_override() or override.type != OverrideType.CHANGE:
                continue
            name = override.key_or_group
            value = (
                next(iter(override.sweep_string_iterator()))
                if override.is_sweep_override()
                else override.get_value_element_as_str()
            )
            if repository.group_exists(name):
                options = [o for o in repository.get_group_options(name) if not o.startswith("_")]
                if value in options or value == "null":
                    groups.append(f"{override.get_key_element()}={value}")
                else:
                    close = difflib.get_close_matches(value, options, n=1, cutoff=0.6)
                    if close:
                        lines.append(f"{override.get_key_element()}={value}: did you mean {name}={close[0]}?")
            else:
                keys.append(name)
        try:
            cfg = compose(config_name, overrides=groups)
        except Exception:  # the groups' options that compose together, in order
            kept: list[str] = []
            for group in groups:
                with contextlib.suppress(Exception):
                    compose(config_name, overrides=[*kept, group])
                    kept.append(group)
            cfg = compose(config_name, overrides=kept)
        group_names = [g for g in repository.get_group_options("", ObjectType.GROUP) if g != "hydra"]
    GlobalHydra.instance().clear()
    declared = _dotted_keys(cfg)
    for key in keys:
        if OmegaConf.select(cfg, key, default=_ABSENT) is not _ABSENT:
            continue
        parent_key, _, name = key.rpartition(".")
        parent = OmegaConf.select(cfg, parent_key, default=None) if parent_key else None
        siblings = [f"{parent_key}.{k}" for k in parent.keys()] if isinstance(parent, DictConfig) else []
        close = difflib.get_close_matches(key, siblings, n=1, cutoff=0.75) or difflib.get_close_matches(
            key, declared + group_names, n=1, cutoff=0.75
        )
        if close:
            lines.append(f"{key} is not a key of the config: did you mean {close[0]}?")
        else:
            lines.append(f"{key} is not a key of the config (--cfg job lists them; +{key}=... adds a new one)")
    return lines


_ABSENT = object()


def _dotted_keys(cfg: Any, prefix: str = "") -> list[str]:
    """Every key of ``cfg`` as it is written on the command line: ``model.max_epochs``, ``tv_lambda``."""
    keys = []
    if isinstance(cfg, DictConfig):
        for key in cfg.keys():
            dotted = f"{prefix}{key}"
            keys.append(dotted)
            node = cfg._get_node(key)
            if isinstance(node, DictConfig):
                keys.extend(_dotted_keys(node, f"{dotted}."))
    return keys
