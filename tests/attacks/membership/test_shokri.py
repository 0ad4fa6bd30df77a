"""Shokri et al.'s shadow-model attack."""

from __future__ import annotations

import pytest

from privacy_attacks.attacks.membership.lira import LiRA
from privacy_attacks.attacks.membership.shokri import ShadowAttack
from privacy_attacks.errors import ConfigError
from tests.attacks.membership.conftest import features


@pytest.mark.parametrize("make", [lambda: LiRA(num_shadows=3), lambda: ShadowAttack(**features("loss"), num_shadows=0)])
def test_odd_shadow_counts_are_config_errors(make):
    with pytest.raises(ConfigError, match="even"):
        make()
