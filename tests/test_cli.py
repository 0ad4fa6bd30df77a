import os
import signal
import time

import lightning as L
import pytest
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import OmegaConf

from privacy_attacks.cli import KEPT, override_hints, run_reporting_errors
from tests.conftest import CONF_DIR, run_script


@pytest.mark.parametrize(
    ("config", "argv", "hint"),
    [
        (
            "attack",
            ["attack=inversion", "tv_lamda=1e-3"],
            "tv_lamda is not a key of the config: did you mean tv_lambda?",
        ),
        ("attack", ["-m", "attack=inversion", "tv_lamda=0,1e-3"], "did you mean tv_lambda?"),
        ("attack", ["-m", "attack=inversions"], "attack=inversions: did you mean attack=inversion?"),
        ("attack", ["atack=inversion"], "atack is not a key of the config: did you mean attack?"),
        ("attack", ["attack=membership", "target.member=3"], "did you mean target.members?"),
        ("attack", ["attack=membership", "metod=lira"], "did you mean method?"),
        ("train", ["model.max_epoch=2"], "did you mean model.max_epochs?"),
        ("lab", ["sedes=2"], "did you mean seeds?"),
        ("attack", ["-cn", "lab", "seed=2"], "did you mean seeds?"),
        ("attack", ["zzzqq=1"], "zzzqq is not a key of the config (--cfg job lists them; +zzzqq=... adds a new one)"),
        ("attack", ["model@target=cnnn"], "model@target=cnnn: did you mean model@target=cnn?"),
        ("attack", ["-m", "attack=inversion,membershp"], "attack=membershp: did you mean attack=membership?"),
        ("attack", ["defense=grid/dpsgd_eps9"], "defense=grid/dpsgd_eps9: did you mean defense=grid/dpsgd_eps8?"),
        ("attack", ["defense=dpsgd_eps8"], "defense=dpsgd_eps8: did you mean defense=grid/dpsgd_eps8?"),
    ],
)
def test_a_misspelt_key_or_option_is_named_with_the_declared_one_it_resembles(config, argv, hint):
    assert any(hint in line for line in override_hints(CONF_DIR, config, argv)), override_hints(CONF_DIR, config, argv)


@pytest.mark.parametrize(
    "argv",
    [
        ["attack=inversion", "tv_lambda=0,1e-3", "model@target=cnn", "net@attacker_net=cnn"],
        ["+new_key=1", "++other=2", "~logger", "hydra.sweep.dir=multirun/x", "attack=membership", "method=lira"],
        ["experiment=membership_label_only", "eval_seed=3"],
        ["attack=inversion", "tv_lambda=[unclosed"],  # not a command line Hydra reads: no hint
        ["--config-dir", "/elsewhere", "attack=mine", "its_key=1"],  # an option nothing resembles: no keys to read
        ["--config-path", "/elsewhere", "attack=inversion", "tv_lamda=1"],  # another primary config folder
    ],
)
def test_declared_keys_additions_and_unreadable_command_lines_get_no_hint(argv):
    assert override_hints(CONF_DIR, "attack", argv) == []


def test_hints_read_the_users_own_config_folders_too(tmp_path):
    (tmp_path / "attack").mkdir()
    (tmp_path / "attack" / "my_attack.yaml").write_text(
        "# @package _global_\ndefaults:\n  - inversion\n  - _self_\nmy_key: 1\n"
    )
    own = ["--config-dir", str(tmp_path)]
    assert override_hints(CONF_DIR, "attack", [*own, "attack=my_atack"]) == [
        "attack=my_atack: did you mean attack=my_attack?"
    ]
    assert override_hints(CONF_DIR, "attack", [*own, "attack=my_attack", "my_kye=2", "tv_lamda=1"]) == [
        "my_kye is not a key of the config: did you mean my_key?",
        "tv_lamda is not a key of the config: did you mean tv_lambda?",
    ]
    searchpath = [f"hydra.searchpath=[file://{tmp_path}]", "attack=my_attack"]
    assert override_hints(CONF_DIR, "attack", [*searchpath, "my_kye=2"]) == [
        "my_kye is not a key of the config: did you mean my_key?"
    ]
    assert override_hints(CONF_DIR, "attack", [*own, "attack=my_attack", "my_key=2"]) == []


def test_a_key_declared_without_a_value_and_the_keys_of_a_misspelt_option_are_not_called_unknown():
    own_data = ["data=image_folder", "data.num_classes=3", "data.source.train_dir=/x", "model.max_epoch=2"]
    assert override_hints(CONF_DIR, "train", own_data) == [
        "model.max_epoch is not a key of the config: did you mean model.max_epochs?"
    ]  # data.num_classes is ??? in data=image_folder, yet declared
    assert override_hints(CONF_DIR, "attack", ["attack=inversions", "tv_lambda=1e-3", "steps=3"]) == [
        "attack=inversions: did you mean attack=inversion?"
    ]  # tv_lambda and steps read from the option it resembles
    assert override_hints(CONF_DIR, "attack", ["attack=zzzzzz", "tv_lambda=1e-3"]) == [
        "attack=zzzzzz: no option of that name in the project's attack/ configs; one of your own is read from the "
        "folder holding attack/zzzzzz.yaml: --config-dir <folder>"
    ]  # and no key hint: nothing to read them from
    assert override_hints(CONF_DIR, "train", ["net@model.net=plain"]) == [
        "net@model.net=plain: no option of that name in the project's net/ configs; one of your own is read from the "
        "folder holding net/plain.yaml: --config-dir <folder>"
    ]
    assert override_hints(CONF_DIR, "train", ["data=image_folder", "data.test_dir=/x"]) == [
        "data.test_dir is not a key of the config: did you mean data.source.test_dir?"
    ]  # the same name a level down, before a key that merely looks alike (data.std)


def test_a_failure_after_a_job_started_gets_no_hint(monkeypatch, capsys):
    from privacy_attacks import cli

    monkeypatch.setattr(cli.sys, "argv", ["attack.py", "attack=inversion", "tv_lamda=1"])
    monkeypatch.setattr(cli, "_JOB_STARTED", True)
    with pytest.raises(SystemExit), cli.config_hints(CONF_DIR, "attack"):
        raise SystemExit(1)
    assert "hint:" not in capsys.readouterr().err
    monkeypatch.setattr(cli, "_JOB_STARTED", False)
    with pytest.raises(SystemExit), cli.config_hints(CONF_DIR, "attack"):
        raise SystemExit(1)
    assert "hint: tv_lamda is not a key of the config: did you mean tv_lambda?" in capsys.readouterr().err


def test_with_hydra_full_error_the_hint_follows_the_traceback(monkeypatch, capsys):
    import atexit

    from hydra.errors import ConfigCompositionException

    from privacy_attacks import cli

    monkeypatch.setattr(cli.sys, "argv", ["attack.py", "attack=inversion", "tv_lamda=1"])
    monkeypatch.setattr(cli, "_JOB_STARTED", False)
    at_exit = []
    monkeypatch.setattr(atexit, "register", lambda function, *args: at_exit.append((function, args)))
    with pytest.raises(ConfigCompositionException), cli.config_hints(CONF_DIR, "attack"):
        raise ConfigCompositionException("Could not override 'tv_lamda'.")  # what Hydra raises under HYDRA_FULL_ERROR
    assert "hint:" not in capsys.readouterr().err  # not before the traceback
    ((function, args),) = at_exit
    function(*args)
    assert "hint: tv_lamda is not a key of the config: did you mean tv_lambda?" in capsys.readouterr().err


@pytest.mark.slow
def test_the_script_prints_the_hint_after_hydras_message(tmp_path):
    done = run_script("attack.py", ["attack=inversion", "tv_lamda=1e-3"], tmp_path, tmp_path / "cache", timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == "hint: tv_lamda is not a key of the config: did you mean tv_lambda?"


def lightning_exit_after_ctrl_c():
    """What Lightning raises after a fit's Ctrl-C and its graceful shutdown."""
    try:
        raise KeyboardInterrupt
    except KeyboardInterrupt:
        raise SystemExit(1) from None  # suppressed in the traceback, still its __context__


@pytest.mark.parametrize(
    ("stop", "status", "line"),
    [
        (KeyboardInterrupt, 130, "error: interrupted (Ctrl-C); what had finished is kept"),
        (lightning_exit_after_ctrl_c, 130, "error: interrupted (Ctrl-C); what had finished is kept"),
        (SIGTERMException, 143, "error: stopped by SIGTERM; what had finished is kept"),
    ],
)
def test_an_interrupted_run_exits_non_zero_with_one_line(stop, status, line, capsys):
    def run(cfg):
        raise stop()

    with pytest.raises(SystemExit) as exit:
        run_reporting_errors(run, OmegaConf.create({}))
    assert exit.value.code == status  # SIGTERMException alone would exit 0, as if the run had finished
    assert capsys.readouterr().err.startswith(line)


@pytest.fixture
def default_sigterm():
    if signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        pytest.skip("SIGTERM has a handler of the test runner's")
    yield
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


OUTSIDE_A_FIT = """
import os, signal, time
from omegaconf import OmegaConf
from privacy_attacks.cli import run_reporting_errors

def run(cfg):
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)
    finally:
        print("cleaned up", flush=True)  # a lock's release, a logger's close

try:
    run_reporting_errors(run, OmegaConf.create({}))
finally:
    print("handler after the run:", signal.getsignal(signal.SIGTERM) == signal.SIG_DFL, flush=True)
"""


def test_sigterm_outside_a_fit_runs_the_finally_blocks_and_exits_143_with_one_line():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", OUTSIDE_A_FIT], capture_output=True, text=True, timeout=60)
    assert done.returncode == 143  # not killed by the signal (-15) before the finally blocks ran
    assert done.stdout.splitlines() == ["cleaned up", "handler after the run: True"]
    assert done.stderr.strip().endswith("error: stopped by SIGTERM; " + KEPT + ".")


class SigtermAt(L.LightningModule):
    """Sends SIGTERM to its process at ``when`` (``("train", i)``, ``("test", i)``: within that step; ``"train_end"``:
    after the fit's last step) and records the steps that finished."""

    def __init__(self, when):
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)
        self.when, self.events = when, []

    def arrive(self, now):
        if now == self.when:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.2)  # the signal arrives here

    def training_step(self, batch, batch_idx):
        self.arrive(("train", batch_idx))
        self.events.append(("train", batch_idx))
        return self.layer(batch[0]).pow(2).mean()

    def test_step(self, batch, batch_idx):
        self.arrive(("test", batch_idx))
        self.events.append(("test", batch_idx))

    def on_train_end(self):
        self.arrive("train_end")

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def fit_and_test(module, test=True):
    """A run: a fit of 4 steps, a test of 2 batches (with ``test``), then a last event of its own."""
    from privacy_attacks.harness import build_trainer

    def run(cfg):
        data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(8, 2)), batch_size=2)
        trainer = build_trainer(None, max_epochs=1, logger=False, enable_checkpointing=False)
        trainer.fit(module, data)
        if test:
            trainer.test(module, torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(4, 2)), 2))
        module.events.append("after")

    return run


TRAINED = [("train", step) for step in range(4)]


@pytest.mark.usefixtures("default_sigterm")
@pytest.mark.parametrize(
    ("when", "test", "events"),
    [
        (("train", 1), True, [("train", 0), ("train", 1)]),  # the step it arrives in, not the ones after
        (("test", 1), True, [*TRAINED, ("test", 0), ("test", 1)]),  # a test's last batch: Lightning alone goes on
        ("train_end", True, TRAINED),  # after the last step: the next call does not start
        ("train_end", False, [*TRAINED, "after"]),  # nothing follows in Lightning: the run ends as stopped
    ],
)
def test_sigterm_in_a_lightning_call_stops_the_run_at_the_end_of_its_batch_with_143(capsys, when, test, events):
    module = SigtermAt(when)
    with pytest.raises(SystemExit) as exit:
        run_reporting_errors(fit_and_test(module, test), OmegaConf.create({}))
    assert exit.value.code == 143 and module.events == events
    assert capsys.readouterr().err.startswith("error: stopped by SIGTERM; what had finished is kept")


def test_another_exit_passes_through_unchanged():
    def run(cfg):
        raise SystemExit(1)

    with pytest.raises(SystemExit) as exit:
        run_reporting_errors(run, OmegaConf.create({}))
    assert exit.value.code == 1
