import functools
import inspect

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


RECIPES = sorted(path.stem for path in (CONF_DIR / "model").glob("[!_]*.yaml"))
NETS = sorted(path.stem for path in (CONF_DIR / "net").glob("*.yaml"))


@pytest.mark.parametrize("model", RECIPES)
def test_every_recipe_composes_into_train_and_builds_its_net(compose_train, model):
    from hydra.utils import instantiate

    cfg = compose_train([f"model={model}"])
    if cfg.model.scheduler is not None:  # a recipe's schedule spans its own epochs
        assert cfg.model.scheduler.T_max == cfg.model.max_epochs
    net = instantiate(cfg.model.net)
    assert sum(p.numel() for p in net.parameters()) > 0


def _resolved(node) -> dict:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(node, resolve=True)


@functools.cache
def net_configs() -> dict[str, dict]:
    """Every ``conf/net/<name>.yaml``, resolved on the default data (MNIST): ``{name: net node}``."""
    return {name: _resolved(_compose("train", [f"net@model.net={name}"]).model.net) for name in NETS}


@pytest.mark.parametrize("name", NETS)
def test_every_net_says_what_it_is_and_takes_only_its_targets_arguments(name):
    from hydra.utils import get_object

    first_line = (CONF_DIR / "net" / f"{name}.yaml").read_text().splitlines()[0]
    assert first_line.startswith("# ") and len(first_line) > 10  # a one-line comment saying what it is
    net = net_configs()[name]
    accepted = set(inspect.signature(get_object(net["_target_"])).parameters)  # a class or a factory
    assert set(net) - {"_target_"} <= accepted, f"{name}: keys its network does not take"


@pytest.mark.parametrize("shape", ["[1,28,28]", "[3,32,32]"])
@pytest.mark.parametrize("name", NETS)
def test_every_net_builds_for_the_datas_shape_and_classes(compose_train, name, shape):
    import torch
    from hydra.utils import instantiate

    cfg = compose_train(["data=synthetic", f"data.image_shape={shape}", "data.num_classes=7", f"net@model.net={name}"])
    validate_recipe(cfg.model, data=cfg.data)
    assert instantiate(cfg.model.net)(torch.rand(2, *cfg.data.image_shape)).shape == (2, 7)


@pytest.mark.parametrize("model", RECIPES)
def test_every_recipe_picks_a_whole_net_and_any_net_replaces_it_keeping_the_training_settings(model):
    recipe = _resolved(_compose("train", [f"model={model}"]).model)
    assert recipe["net"] in net_configs().values(), f"{model}: its net is not one of conf/net/ (keys merged into it?)"
    for name, net in net_configs().items():
        swapped = _resolved(_compose("train", [f"model={model}", f"net@model.net={name}"]).model)
        assert swapped.pop("net") == net  # the whole node, none of the recipe's own net keys merged in
        assert swapped == {key: value for key, value in recipe.items() if key != "net"}


@pytest.mark.parametrize("attack", available_attacks())
def test_a_net_override_swaps_the_targets_architecture_and_keeps_its_recipe(attack):
    default = _compose("attack", [f"attack={attack}"])
    swapped = _compose("attack", [f"attack={attack}", "net@target.net=cnn"])
    target = _resolved(swapped.target)
    assert target.pop("net") == net_configs()["cnn"]
    assert target == {key: value for key, value in _resolved(default.target).items() if key != "net"}
    for judge in ("evaluator", "judge"):  # the judges keep their own networks
        assert _resolved(swapped[judge]) == _resolved(default[judge])
    if "shadow_recipe" in swapped:  # membership's shadow models follow the attacker's guess: the target's recipe
        assert _resolved(swapped.shadow_recipe) == _resolved(swapped.target)
    if "student" in swapped:  # the stealing student is the target's architecture
        assert _resolved(swapped.student.net) == net_configs()["cnn"]


ATTACKER_NET_ATTACKS = ("distillation", "membership")  # the attacks that train models of their own


def _attacker_net(cfg) -> dict:
    """The network the attack trains: the stealing student's, or membership's shadow models' and proxy's."""
    if "student" in cfg:
        return _resolved(cfg.student.net)
    from privacy_attacks.attacks.membership.attack import shadow_recipe

    return _resolved(shadow_recipe(cfg).net)


@pytest.mark.parametrize("attack", ATTACKER_NET_ATTACKS)
@pytest.mark.parametrize("name", NETS)
def test_an_attacker_net_override_swaps_the_attackers_network_whole_and_leaves_the_target_alone(attack, name):
    default = _compose("attack", [f"attack={attack}"])
    swapped = _compose("attack", [f"attack={attack}", f"net@attacker_net={name}"])
    assert _attacker_net(default) == _resolved(default.target.net)  # by default the attacker knows the architecture
    assert _attacker_net(swapped) == net_configs()[name]  # the whole node: none of LeNet5's keys merged in
    assert _resolved(swapped.target) == _resolved(default.target)


@pytest.mark.parametrize("attack", ATTACKER_NET_ATTACKS)
def test_the_attacker_net_and_the_targets_net_change_apart(attack):
    cfg = _compose("attack", [f"attack={attack}", "net@target.net=mlp", "net@attacker_net=cnn"])
    assert _resolved(cfg.target.net) == net_configs()["mlp"]
    assert _attacker_net(cfg) == net_configs()["cnn"]
    follows = _compose("attack", [f"attack={attack}", "net@target.net=mlp"])
    assert _attacker_net(follows) == net_configs()["mlp"]  # without attacker_net it follows the target's


def test_membership_shadows_on_another_net_keep_the_recipes_training_and_its_dp():
    from privacy_attacks.attacks.membership.attack import shadow_recipe

    cfg = _compose("attack", ["attack=membership", "net@attacker_net=cnn", "defense=dpsgd", "shadow_privacy=true"])
    recipe = _resolved(shadow_recipe(cfg))
    assert recipe.pop("net") == net_configs()["cnn"] and recipe.pop("privacy")["_target_"].endswith("DPSGD")
    assert recipe == {key: value for key, value in _resolved(cfg.target).items() if key != "net"}


def test_the_attacker_net_is_in_the_runs_hparams():
    from privacy_attacks.harness import run_hparams

    params = run_hparams(_compose("attack", ["attack=distillation", "net@attacker_net=cnn"]))
    assert params["attacker_net._target_"] == "privacy_attacks.models.SmallVGG"
    assert not any(key.startswith("attacker_net") for key in run_hparams(_compose("attack", ["attack=distillation"])))


def test_the_membership_recipe_on_another_net_keeps_its_epochs_batch_size_and_members():
    target = _compose("attack", ["attack=membership", "net@target.net=cnn"]).target
    assert target.net._target_ == "privacy_attacks.models.SmallVGG"
    assert (target.max_epochs, target.batch_size, target.members) == (30, 32, 1000)


def test_an_experiment_that_picks_a_net_yields_to_a_net_override():
    cfg = _compose("train", ["experiment=dp_sgd_eps1", "net@model.net=cnn"])
    assert _resolved(cfg.model.net) == net_configs()["cnn"] and cfg.model.max_epochs == 15


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


@pytest.mark.parametrize("attack", ["distillation", "feature_inversion", "gradient_inversion", "membership"])
def test_a_text_split_seed_stops_every_attack_before_any_work(compose_attack, attack):
    from privacy_attacks.pipelines import check_attack, check_train

    with pytest.raises(ConfigError, match=r"^data.split_seed='abc' is not allowed: it must be an integer\.$"):
        check_attack(compose_attack([f"attack={attack}", "data.split_seed=abc"]))
    with pytest.raises(ConfigError, match=r"^data.split_seed=1.5 is not allowed"):
        check_train(_compose("train", ["data.split_seed=1.5"]))


PROVISIONED_HERE = [a for a in available_attacks() if not _compose("attack", [f"attack={a}"]).attack.get("provision")]


@pytest.mark.parametrize("attack", PROVISIONED_HERE)
def test_a_target_network_that_does_not_fit_the_data_is_named_as_the_targets(compose_attack, attack):
    # The attacker's default network is the target's: its fault is reported under target.net, not student.net.
    from privacy_attacks.pipelines import check_attack

    with pytest.raises(ConfigError, match=r"^target.net \(LeNet5\) gives outputs .* set target.net.num_classes=10"):
        check_attack(compose_attack([f"attack={attack}", "target.net.num_classes=7"]))


def test_an_attack_that_provisions_no_target_is_not_held_to_the_targets_network(compose_attack):
    from privacy_attacks.pipelines import check_attack

    small = ["data=synthetic", "data.image_shape=[1,8,8]"]  # too small for LeNet5, not for DLG's shared LeNet
    check_attack(compose_attack(["attack=gradient_inversion", *small]))
    with pytest.raises(ConfigError, match=r"LeNet5 takes images of at least 12x12"):
        check_attack(compose_attack(["attack=gradient_inversion", *small, "shared_model=target"]))


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
    "gradient_large_batch": "private_seed",
    "feature_layers": "private_seed",
    "membership_methods": "eval_seed",
    "membership_label_only": "eval_seed",
    "stealing_target_draws": "target.seed",
    "inversion_target_draws": "target.seed",
}


@pytest.mark.parametrize(("name", "key"), sorted(HEADLINE_SCENARIOS.items()))
def test_headline_experiments_sweep_the_victims_draw_beside_the_attackers_seed(name, key):
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="attack", overrides=[f"experiment={name}"], return_hydra_config=True)
    params = OmegaConf.to_container(cfg.hydra.sweeper.params)
    assert list(cfg.summary.scenario) == [key]
    assert len(str(params[key]).split(",")) >= 3 and len(str(params["seed"]).split(",")) >= 3
