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


KEPT = (
    "what had finished is kept (finished jobs and their sweep's partial summary, cached models, and the models "
    "being trained for the cache as of their last saved epoch)"
)


_JOB_STARTED = False  # set by the first job of this process: Hydra's exit 1 after it is no config error


def run_reporting_errors(run: Callable[[DictConfig], Any], cfg: DictConfig) -> Any:
    """Call ``run(cfg)``; a :class:`UserError` or a config error exits with status 2 and its message; Ctrl-C with
    status 130 (Lightning's exit 1 after a fit's Ctrl-C too) and SIGTERM (:func:`sigterm_raises`; Lightning's
    ``SIGTERMException``, which would exit 0) with 143, each with one line."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from privacy_attacks.callbacks.sigterm import sigterm_raises  # the callbacks import this module

    global _JOB_STARTED
    _JOB_STARTED = True
    try:
        with sigterm_raises():
            return run(cfg)
    except (UserError, OmegaConfBaseException) as error:
        _exit_with(one_line(error), 2)
    except KeyboardInterrupt:
        _exit_with(f"interrupted (Ctrl-C); {KEPT}.", 130)
    except SIGTERMException:
        _exit_with(f"stopped by SIGTERM; {KEPT}.", 143)
    except SystemExit as exit:  # Lightning ends a fit's Ctrl-C, after its graceful shutdown, with exit status 1
        if exit.code == 1 and isinstance(exit.__context__, KeyboardInterrupt):
            _exit_with(f"interrupted (Ctrl-C); {KEPT}.", 130)
        raise


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
    """Around a script's Hydra ``main()``: when Hydra has reported an error before any job started (a config that
    did not compose) and exits with status 1, add a line for each command-line key or config option that names
    nothing, with the declared one it most resembles (:func:`override_hints`). Hydra's own message suggests
    ``+tv_lamda=...`` for a misspelt ``tv_lambda``. With ``HYDRA_FULL_ERROR=1`` Hydra raises its error instead of
    exiting: the hints follow its traceback."""
    from hydra.errors import ConfigCompositionException, MissingConfigException

    try:
        yield
    except SystemExit as exit:
        if exit.code == 1 and not _JOB_STARTED:
            _print_hints(config_dir, config_name)
        raise
    except (ConfigCompositionException, MissingConfigException):
        if not _JOB_STARTED:
            import atexit  # after the traceback, which Python prints once this exception has left main

            atexit.register(_print_hints, config_dir, config_name)
        raise


def _print_hints(config_dir: Path, config_name: str) -> None:
    for line in override_hints(config_dir, config_name, sys.argv[1:]):
        print(f"hint: {line}", file=sys.stderr)


def override_hints(config_dir: Path, config_name: str, argv: Sequence[str]) -> list[str]:
    """One line per override of the command line ``argv`` that changes a key the composed config does not have
    (``tv_lamda=1e-3``) or picks an option its group does not have (``attack=inversions``), naming the closest
    declared key or option, among the config folders the command line adds too (``--config-dir``,
    ``hydra.searchpath``); nothing for the others, nor when the command line cannot be read or names another primary
    config folder (``--config-path``)."""
    try:
        return _override_hints(config_dir, config_name, argv)
    except Exception:  # a hint is a courtesy: Hydra has already said what went wrong
        return []


def _override_hints(config_dir: Path, config_name: str, argv: Sequence[str]) -> list[str]:
    from hydra import compose, initialize_config_dir
    from hydra._internal.config_repository import ConfigRepository
    from hydra._internal.utils import create_config_search_path, get_args_parser
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.object_type import ObjectType
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import OverrideType

    args = get_args_parser().parse_args(list(argv))
    overrides = OverridesParser.create().parse_overrides(args.overrides)
    if args.config_path:
        return []  # another primary config folder, relative to the script: configs this reading would not see
    # The user's own config folders (--config-dir, hydra.searchpath), searched after this one, as Hydra searches them.
    extra = [f"file://{Path(args.config_dir).resolve()}"] if args.config_dir else []
    for override in overrides:
        if override.key_or_group == "hydra.searchpath" and isinstance(override.value(), list):
            extra += [str(path) for path in override.value()]
    search = [f"hydra.searchpath=[{','.join(extra)}]"] if extra else []
    config_name = args.config_name or config_name
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(config_dir.resolve())):
        search_path = create_config_search_path(str(config_dir.resolve()))
        for path in extra:
            search_path.append("command-line", path)
        repository = ConfigRepository(config_search_path=search_path)
        groups, keys, lines = [], [], []
        for override in overrides:
            if override.is_hydra_override() or override.type != OverrideType.CHANGE:
                continue
            name, written = override.key_or_group, override.get_key_element()
            if not repository.group_exists(name):
                keys.append(name)
                continue
            options = _group_options(repository, name)
            values = list(override.sweep_string_iterator()) if override.is_sweep_override() else None
            values = values or [override.get_value_element_as_str()]
            unknown = [v for v in values if v not in options and v != "null"]
            close = difflib.get_close_matches(unknown[0], options, n=1, cutoff=0.6) if unknown else []
            if unknown and not close:  # an option nothing resembles: the keys it would declare are unknown here
                if not extra:  # perhaps a config of one's own, in a folder the command line does not name
                    lines.append(
                        f"{written}={unknown[0]}: no option of that name in the project's {name}/ configs; one of "
                        f"your own is read from the folder holding {name}/{unknown[0]}.yaml: --config-dir <folder>"
                    )
                return lines
            if close:
                lines.append(f"{written}={unknown[0]}: did you mean {written}={close[0]}?")
            groups.append(f"{written}={close[0] if close else values[0]}")  # read the keys as if it were right
        try:
            cfg = compose(config_name, overrides=[*search, *groups])
        except Exception:  # the groups' options that compose together, in order
            kept: list[str] = []
            for group in groups:
                with contextlib.suppress(Exception):
                    compose(config_name, overrides=[*search, *kept, group])
                    kept.append(group)
            cfg = compose(config_name, overrides=[*search, *kept])
        group_names = [g for g in repository.get_group_options("", ObjectType.GROUP) if g != "hydra"]
    GlobalHydra.instance().clear()
    declared = _dotted_keys(cfg)
    for key in keys:
        parent_key, _, name = key.rpartition(".")
        parent = OmegaConf.select(cfg, parent_key, default=None) if parent_key else cfg
        if isinstance(parent, DictConfig) and name in parent.keys():  # declared (its value may be ??? still)
            continue
        siblings = [f"{parent_key}.{k}" for k in parent.keys()] if parent_key and isinstance(parent, DictConfig) else []
        deeper = [k for k in declared if k.startswith(f"{parent_key}.") and k.endswith(f".{name}")] if name else []
        close = (
            deeper[:1]  # the same name one level down or more: data.test_dir for data.source.test_dir
            or difflib.get_close_matches(key, siblings, n=1, cutoff=0.75)
            or difflib.get_close_matches(key, declared + group_names, n=1, cutoff=0.75)
        )
        if close:
            lines.append(f"{key} is not a key of the config: did you mean {close[0]}?")
        else:
            lines.append(f"{key} is not a key of the config (--cfg job lists them; +{key}=... adds a new one)")
    return lines


def _group_options(repository: Any, group: str, prefix: str = "") -> list[str]:
    """The options of a config ``group`` as a command line names them, those of its folders too
    (``defense=grid/dpsgd_eps8``); hidden ones (``_name``) left out."""
    from hydra.core.object_type import ObjectType

    options = [f"{prefix}{o}" for o in repository.get_group_options(group, ObjectType.CONFIG) if not o.startswith("_")]
    for folder in repository.get_group_options(group, ObjectType.GROUP):
        options += _group_options(repository, f"{group}/{folder}", f"{prefix}{folder}/")
    return options


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
