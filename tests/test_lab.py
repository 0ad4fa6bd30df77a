"""The lab command: its stages' command lines, resuming, and the report it writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf, open_dict

from privacy_attacks import lab
from privacy_attacks.errors import ConfigError
from privacy_attacks.report import stage_table
from tests.conftest import CONF_DIR, mnist_root


def lab_config(overrides: list[str] = ()) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="lab", overrides=list(overrides))


def test_every_stage_is_a_train_run_or_an_experiment_multirun_with_the_seeds_and_trainer(tmp_path: Path):
    cfg = lab_config(["seeds=3"])
    for name, stage in cfg.stages.items():
        command = lab.stage_command(stage, cfg.seeds, "gpu", tmp_path / name)
        assert "trainer=gpu" in command
        if stage.script == "train.py":
            assert command[0] == "train.py" and f"hydra.run.dir={tmp_path / name}" in command
        else:
            assert command[:2] == ["attack.py", "-m"] and "seed=0,1,2" in command
            assert any(arg.startswith("experiment=") for arg in command)
            assert f"hydra.sweep.dir={tmp_path / name}" in command


def test_every_stage_composes_as_an_attack_config():
    cfg = lab_config()
    for stage in cfg.stages.values():
        if stage.script == "attack.py":
            # Sweep values (a,b) are passed to Hydra's sweeper; composing takes each key's first value.
            overrides = [o.split(",")[0] if "," in o else o for o in stage.overrides]
            with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
                compose(config_name="attack", overrides=overrides)


def test_only_names_known_stages():
    assert lab.selected_stages(lab_config(["only=[stealing,target]"])) == ["target", "stealing"]
    with pytest.raises(ConfigError, match="no stage"):
        lab.selected_stages(lab_config(["only=[stealng]"]))


def test_stage_table_shows_seed_means_with_intervals(tmp_path: Path):
    (tmp_path / "summary_seeds.csv").write_text("loss,n_seeds,acc/mean,acc/ci95\nkl,3,0.98765,0.0021\n")
    (tmp_path / "summary.csv").write_text("job,loss,seed,acc\n0,kl,0,0.98\n")
    header, rows, source = stage_table(tmp_path)
    assert source == "summary_seeds.csv"
    assert header == ["loss", "n_seeds", "acc"] and rows == [["kl", "3", "0.9877 ± 0.0021"]]
    (tmp_path / "summary_seeds.csv").unlink()
    header, rows, source = stage_table(tmp_path)
    assert source == "summary.csv" and header == ["seed", "acc"] and rows == [["0", "0.98"]]


@pytest.mark.mnist
@pytest.mark.slow
def test_the_lab_writes_one_report_and_resumes_without_rerunning(tmp_path, cache_dir, monkeypatch, capsys):
    monkeypatch.setenv("PRIVACY_ATTACKS_CACHE", str(cache_dir))
    monkeypatch.setenv("MNIST_ROOT", mnist_root())
    cfg = lab_config([f"lab_dir={tmp_path}"])
    tiny_target = ["target.max_epochs=1", "target.members=2000"]
    with open_dict(cfg):
        cfg.stages = OmegaConf.create(
            {
                "target": {
                    "title": "A tiny target",
                    "script": "train.py",
                    "overrides": ["model.max_epochs=1", "model.members=1000", "+trainer.enable_progress_bar=false"],
                },
                "stealing": {
                    "title": "Distillation",
                    "script": "attack.py",
                    "overrides": ["attack=distillation", *tiny_target, "query_budget=50,100", "schedule.steps=10"],
                },
            }
        )
    lab.run_lab(cfg)
    report = (tmp_path / "report.md").read_text()
    assert "## A tiny target" in report and "## Distillation" in report
    assert "python attack.py -m attack=distillation" in report and "seed=0" in report
    assert "student/agreement" in report and "test/acc" in report
    assert "torch:" in report and "device: CPU" in report
    page = (tmp_path / "report.html").read_text()
    assert "data:image/png;base64," in page and "<table>" in page
    state = json.loads((tmp_path / "state.json").read_text())
    assert {entry["status"] for entry in state.values()} == {"done"}

    def not_again(*args, **kwargs):
        raise AssertionError("a finished stage ran again")

    monkeypatch.setattr(lab, "run_stage", not_again)
    lab.run_lab(cfg)
    assert capsys.readouterr().out.count("not run again") == 2


def test_saving_the_state_leaves_another_writers_temporary_file_alone(tmp_path: Path):
    squatter = tmp_path / "state.tmp"  # another lab process's write in progress, at what was a fixed name
    squatter.write_text("another writer's half-written state")
    state = {"target": {"status": "done", "seconds": 1.5, "command": "python train.py"}}
    lab.save_state(tmp_path, state)
    assert lab.load_state(tmp_path) == state
    assert squatter.read_text() == "another writer's half-written state"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json", "state.tmp"]  # no temporary file left


def test_a_failed_stage_is_reported_and_retried(tmp_path, monkeypatch):
    cfg = lab_config([f"lab_dir={tmp_path}", "only=[target]"])
    monkeypatch.setattr(lab, "run_stage", lambda command, log_file: 1)
    with pytest.raises(SystemExit, match="target failed"):
        lab.run_lab(cfg)
    assert json.loads((tmp_path / "state.json").read_text())["target"]["status"] == "failed (1)"
    assert "failed (1)" in (tmp_path / "report.md").read_text()
    calls = []
    monkeypatch.setattr(lab, "run_stage", lambda command, log_file: calls.append(command) or 0)
    lab.run_lab(cfg)
    assert len(calls) == 1


def test_the_lab_fixes_the_scenario_draw_of_the_experiments_that_sweep_one():
    """Headline experiments sweep the victim's draw (summary.scenario); the lab runs one draw of each, so its
    stages stay at minutes."""
    lab = OmegaConf.load(CONF_DIR / "lab.yaml")
    for name, stage in lab.stages.items():
        experiments = [str(o).split("=", 1)[1] for o in stage.overrides if str(o).startswith("experiment=")]
        for experiment in experiments:
            node = OmegaConf.load(CONF_DIR / "experiment" / f"{experiment}.yaml")
            for key in OmegaConf.select(node, "summary.scenario") or []:
                assert any(str(o).startswith(f"{key}=") and "," not in str(o) for o in stage.overrides), (name, key)
