"""Membership errors name the key the user typed, also where a method's argument is fed from another key."""

from __future__ import annotations

import pytest

from privacy_attacks.attacks.membership import validate
from privacy_attacks.attacks.membership.lira import LiRA
from privacy_attacks.attacks.membership.rmia import RMIA, fit_offline_a
from privacy_attacks.attacks.membership.shokri import ShadowAttack
from privacy_attacks.errors import ConfigError
from tests.attacks.membership.conftest import features
from tests.conftest import attack_config


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["method=rmia_offline", "num_ref_models=0"], "^num_ref_models=0 is not allowed"),
        (["method=rmia", "num_ref_models=3"], "^num_ref_models=3 is not allowed"),
        (["method=lira", "num_shadows=5"], "^num_shadows=5 is not allowed"),
        (["method=lira_offline", "num_shadows=0"], "^num_shadows=0 is not allowed"),
        (["method=shadow", "methods.shadow.num_shadows=3"], "^methods.shadow.num_shadows=3 is not allowed"),
        (["method=shadow", "features=[sorted,nope]"], "^features='nope' is not one of"),
        (["method=rmia", "num_population=0"], "^num_population=0 is not allowed"),
        (["method=rmia_offline", "gamma=0"], "^gamma=0 is not allowed"),
        (["method=rmia_offline", "methods.rmia_offline.a=2"], "^methods.rmia_offline.a=2 is not allowed"),
        (["method=rmia", "methods.rmia.a=true"], "^methods.rmia.a=True is not allowed"),
        (["method=lira", "methods.lira.query_shift=-1"], "^methods.lira.query_shift=-1 is not allowed"),
        (["method=lira_offline", "methods.lira_offline.query_shift=x"], "^methods.lira_offline.query_shift='x'"),
        # The budget experiment sweeps num_ref_models and feeds LiRA's num_shadows from it.
        (["experiment=membership_budget", "method=lira", "num_ref_models=3"], "^num_ref_models=3 is not allowed"),
        (["experiment=membership_budget", "method=lira_offline", "num_ref_models=0"], "^num_ref_models=0 is not"),
        (["experiment=membership_budget", "method=rmia_offline", "num_ref_models=0"], "^num_ref_models=0 is not"),
    ],
)
def test_errors_name_the_key_the_user_typed(overrides, message):
    cfg = attack_config("membership", overrides)
    with pytest.raises(ConfigError, match=message):
        validate(cfg)  # the method is built before any data is read


def test_classes_name_their_arguments_without_keys():
    with pytest.raises(ConfigError, match="^num_shadows=3 is not allowed"):
        LiRA(num_shadows=3)
    with pytest.raises(ConfigError, match="^num_shadows=1 is not allowed"):
        ShadowAttack(**features("loss"), num_shadows=1)
    with pytest.raises(ConfigError, match="^num_ref_models=1 is not allowed"):
        RMIA(num_ref_models=1)
    with pytest.raises(ConfigError, match="^a=-1 is not allowed"):
        RMIA(a=-1)
    with pytest.raises(ConfigError, match="^num_ref_models=5 is not allowed"):
        LiRA(num_shadows=5, keys={"num_shadows": "num_ref_models"})


def test_an_a_that_cannot_be_set_names_its_key():
    import torch

    probs, in_mask, population = torch.rand(1, 4), torch.tensor([[True, False, True, False]]), torch.rand(1, 4)
    with pytest.raises(ConfigError, match=r"give methods\.rmia_offline\.a a value"):
        fit_offline_a(probs, in_mask, population, gamma=1.0, key="methods.rmia_offline.a")


def test_an_attacker_already_given_all_its_images_is_not_told_to_raise_attacker_size():
    cfg = attack_config("membership", ["method=lira", "shadow_train_size=30000"])
    with pytest.raises(ConfigError, match=r"But attacker_size is null: the attacker already has all 53000 images"):
        validate(cfg)
    sized = attack_config("membership", ["method=lira", "shadow_train_size=30000", "attacker_size=20000"])
    with pytest.raises(ConfigError, match=r"raise attacker_size") as error:
        validate(sized)
    assert "already has" not in str(error.value)


def test_rmias_population_error_says_what_makes_room_in_each_case():
    online = attack_config("membership", ["method=rmia", "eval_nonmembers=700"])
    with pytest.raises(ConfigError, match=r"raise shadow_train_size or lower eval_members or eval_nonmembers\.$"):
        validate(online)  # the population comes from the online models' own images: attacker_size does not help
    offline = attack_config("membership", ["method=rmia_offline", "attacker_size=2500"])
    with pytest.raises(ConfigError, match=r"lower shadow_train_size or raise attacker_size"):
        validate(offline)


def test_shadow_models_follow_the_targets_regularisers_unless_the_attacker_does_not_know_of_them():
    from privacy_attacks.attacks.membership.attack import shadow_recipe

    regularised = ["method=lira", "target.label_smoothing=0.1", "target.ema_decay=0.99"]
    knows = shadow_recipe(attack_config("membership", regularised))
    assert (knows.label_smoothing, knows.ema_decay) == (0.1, 0.99)
    unaware = shadow_recipe(attack_config("membership", [*regularised, "shadow_regularisers=false"]))
    assert (unaware.label_smoothing, unaware.ema_decay) == (0.0, None) and unaware.max_epochs == knows.max_epochs
    with pytest.raises(ConfigError, match="shadow_regularisers"):
        shadow_recipe(attack_config("membership", ["shadow_regularisers=maybe"]))
