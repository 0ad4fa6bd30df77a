import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException, MissingConfigException

from privacy_attacks.defenses import recipe_with_defense
from privacy_attacks.errors import ConfigError
from privacy_attacks.pipelines import available_attacks, run_attack, run_train
from privacy_attacks.training import validate_recipe
from tests.conftest import CONF_DIR, run_script


def _compose(name, overrides):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name=name, overrides=overrides)


def test_train_config_composes_the_target_recipe(compose_train):
    cfg = compose_train(["seed=7"])
    assert cfg.model.net._target_ == "privacy_attacks.models.LeNet5"
    assert cfg.model.seed == 7
    assert cfg.model.scheduler.T_max == cfg.model.max_epochs
    assert cfg.trainer.accelerator == "cpu" and cfg.trainer.deterministic


@pytest.mark.parametrize("model", sorted(path.stem for path in (CONF_DIR / "model").glob("lenet5*.yaml")))
def test_every_target_recipe_composes_into_train_and_builds_its_net(compose_train, model):
    from hydra.utils import instantiate

    cfg = compose_train([f"model={model}"])
    if cfg.model.scheduler is not None:  # a recipe's schedule spans its own epochs
        assert cfg.model.scheduler.T_max == cfg.model.max_epochs
    net = instantiate(cfg.model.net)
    assert sum(p.numel() for p in net.parameters()) > 0


def test_gpu_trainer_composes():
    cfg = _compose("train", ["trainer=gpu"])
    assert cfg.trainer.accelerator == "gpu"


def test_attack_config_keeps_target_seed_apart_from_attack_seed(compose_attack):
    cfg = compose_attack(["seed=5"])
    assert cfg.seed == 5 and cfg.target.seed == 0
    assert cfg.evaluator.net._target_ != cfg.target.net._target_


def test_mnist_root_env_sets_the_data_root(monkeypatch):
    monkeypatch.setenv("MNIST_ROOT", "/somewhere/data")
    assert _compose("train", []).data.root == "/somewhere/data"
    assert _compose("train", ["data.root=/else"]).data.root == "/else"


def test_a_typo_in_a_key_names_the_key():
    with pytest.raises(ConfigCompositionException, match="trainr"):
        _compose("train", ["trainr.max_epochs=3"])


def test_an_unknown_group_option_lists_the_options():
    with pytest.raises(MissingConfigException) as error:
        _compose("train", ["trainer=tpu"])
    assert "trainer/tpu" in str(error.value)
    assert set(error.value.options) >= {"cpu", "gpu"}


@pytest.mark.parametrize(
    "override, key",
    [
        ("model.max_epochs=0", "model.max_epochs"),
        ("model.optimizer.lr=-0.1", "model.optimizer.lr"),
        ("model.batch_size=0", "model.batch_size"),
    ],
)
def test_non_positive_values_stop_before_any_work(compose_train, override, key):
    with pytest.raises(ConfigError, match=key):
        run_train(compose_train([override]))


def test_attack_without_attack_group_says_what_to_choose(compose_attack):
    with pytest.raises(ConfigError, match="attack=<name>"):
        run_attack(compose_attack([]))


def test_available_attacks_come_from_the_attack_folder():
    assert available_attacks() == sorted(p.stem for p in (CONF_DIR / "attack").glob("[!_]*.yaml"))


@pytest.mark.slow
def test_bad_input_exits_with_a_message_not_a_traceback(tmp_path, cache_dir):
    result = run_script("train.py", ["model.max_epochs=0"], tmp_path, cache_dir)
    assert result.returncode == 2
    assert "model.max_epochs=0 is not allowed" in result.stderr
    assert "Traceback" not in result.stderr


def experiment_entry(name: str) -> str:
    """``train`` or ``attack``: the entry config an experiment is for, as the command in its header says."""
    text = (CONF_DIR / "experiment" / f"{name}.yaml").read_text()
    return "train" if "python train.py" in text else "attack"


EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
ATTACK_EXPERIMENTS = [name for name in EXPERIMENTS if experiment_entry(name) == "attack"]
TRAIN_EXPERIMENTS = [name for name in EXPERIMENTS if experiment_entry(name) == "train"]


@pytest.mark.parametrize("name", TRAIN_EXPERIMENTS)
def test_every_training_experiment_composes_reports_on_fresh_seeds_and_validates(compose_train, name):
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        hydra_cfg = compose(config_name="train", overrides=[f"experiment={name}"], return_hydra_config=True)
    seeds = str(OmegaConf.to_container(hydra_cfg.hydra.sweeper.params)["seed"]).split(",")
    assert len(seeds) >= 3 and not {"0", "1", "2"} & set(seeds)  # the tuning runs' seeds never report
    cfg = compose_train([f"experiment={name}", f"seed={seeds[0]}"])
    assert cfg.summary.metric == "val/acc"  # a sweep ranks its jobs on the validation split
    validate_recipe(recipe_with_defense(cfg, "model"))


@pytest.mark.parametrize("name", ATTACK_EXPERIMENTS)
def test_every_experiment_composes_and_every_swept_job_validates(compose_attack, name):
    from hydra.utils import get_method
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        hydra_cfg = compose(config_name="attack", overrides=[f"experiment={name}"], return_hydra_config=True)
    params = OmegaConf.to_container(hydra_cfg.hydra.sweeper.params)
    assert "seed" in params and len(str(params["seed"]).split(",")) >= 3  # every experiment sweeps >= 3 attacker seeds
    first = [f"{key}={str(values).split(',')[0]}" for key, values in params.items()]
    cfg = compose_attack([f"experiment={name}", *first])
    if cfg.attack.get("validate"):
        get_method(cfg.attack.validate)(cfg)


@pytest.mark.parametrize("attack", ["membership", "audit"])
def test_the_audit_delta_follows_the_defences_delta_unless_set(compose_attack, attack):
    from hydra.utils import get_method

    def composed(overrides):
        cfg = compose_attack([f"attack={attack}", *overrides])
        get_method(cfg.attack.validate)(cfg)
        return cfg.audit_delta

    assert composed(["defense=none"]) == 1e-5  # no δ to follow
    assert composed(["defense=dpsgd", "defense.delta=1e-6"]) == 1e-6
    assert composed(["defense=grid/dpsgd_eps3"]) == 1e-5
    assert composed(["defense=dpsgd", "defense.delta=1e-6", "audit_delta=1e-3"]) == 1e-3  # an explicit value wins
    assert composed(["defense=none", "audit_delta=0.0"]) == 0.0


HEADLINE_SCENARIOS = {
    "gradient_idlg": "private_seed",
    "gradient_batch4": "private_seed",
    "feature_layers": "private_seed",
    "membership_methods": "eval_seed",
}


@pytest.mark.parametrize(("name", "key"), sorted(HEADLINE_SCENARIOS.items()))
def test_headline_experiments_sweep_the_victims_draw_beside_the_attackers_seed(name, key):
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="attack", overrides=[f"experiment={name}"], return_hydra_config=True)
    params = OmegaConf.to_container(cfg.hydra.sweeper.params)
    assert list(cfg.summary.scenario) == [key]
    assert len(str(params[key]).split(",")) >= 3 and len(str(params["seed"]).split(",")) >= 3
