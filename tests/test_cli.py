import pytest
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import OmegaConf

from privacy_attacks.cli import override_hints, run_reporting_errors
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
    ],
)
def test_a_misspelt_key_or_option_is_named_with_the_declared_one_it_resembles(config, argv, hint):
    assert any(hint in line for line in override_hints(CONF_DIR, config, argv)), override_hints(CONF_DIR, config, argv)


@pytest.mark.parametrize(
    "argv",
    [
        ["attack=inversion", "tv_lambda=0,1e-3", "model@target=cnn", "net@attacker_net=cnn"],
        ["+new_key=1", "++other=2", "~logger", "hydra.sweep.dir=/tmp/x", "attack=membership", "method=lira"],
        ["experiment=membership_label_only", "eval_seed=3"],
        ["attack=inversion", "tv_lambda=[unclosed"],  # not a command line Hydra reads: no hint
    ],
)
def test_declared_keys_additions_and_unreadable_command_lines_get_no_hint(argv):
    assert override_hints(CONF_DIR, "attack", argv) == []


@pytest.mark.slow
def test_the_script_prints_the_hint_after_hydras_message(tmp_path):
    done = run_script("attack.py", ["attack=inversion", "tv_lamda=1e-3"], tmp_path, tmp_path / "cache", timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == "hint: tv_lamda is not a key of the config: did you mean tv_lambda?"


@pytest.mark.parametrize(
    ("stop", "status", "line"),
    [
        (KeyboardInterrupt, 130, "error: interrupted (Ctrl-C); what had finished is kept"),
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
