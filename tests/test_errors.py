import pytest

from privacy_attacks.errors import ConfigError, is_integer, require_bool, require_int, require_positive


def test_is_integer_excludes_booleans_and_floats():
    assert is_integer(3) and is_integer(0) and is_integer(-2)
    assert not is_integer(True) and not is_integer(3.0) and not is_integer("3") and not is_integer(None)


@pytest.mark.parametrize("value", [1, 7])
def test_require_int_accepts_positive_integers(value):
    require_int(value, "steps")


@pytest.mark.parametrize("value", [0, -1, 2.0, True, "3", None])
def test_require_int_names_the_key(value):
    with pytest.raises(ConfigError, match=r"steps=.* is not allowed: it must be an integer > 0\.$"):
        require_int(value, "steps")


def test_require_int_minimum_and_any_integer():
    require_int(0, "api.decimals", minimum=0)
    with pytest.raises(ConfigError, match=r"api\.decimals=-1 is not allowed: it must be an integer >= 0\.$"):
        require_int(-1, "api.decimals", minimum=0)
    require_int(-5, "private_seed", minimum=None)
    with pytest.raises(ConfigError, match=r"private_seed=1\.5 is not allowed: it must be an integer\.$"):
        require_int(1.5, "private_seed", minimum=None)


def test_require_int_null_means():
    require_int(None, "query_budget", null_means="no limit")
    with pytest.raises(ConfigError, match=r"it must be an integer > 0 or null \(no limit\)\.$"):
        require_int(0, "query_budget", null_means="no limit")


def test_require_positive_messages():
    require_positive(0.5, "lr")
    with pytest.raises(ConfigError, match=r"lr=0 is not allowed: it must be a number > 0\.$"):
        require_positive(0, "lr")
    with pytest.raises(ConfigError, match=r"tv_lambda=-1 is not allowed: it must be a number >= 0\.$"):
        require_positive(-1, "tv_lambda", allow_zero=True)


@pytest.mark.parametrize("value", [1, 0, "true", None])
def test_require_bool_names_the_key(value):
    require_bool(True, "flag")
    require_bool(False, "flag")
    with pytest.raises(ConfigError, match=f"flag={value!r} is not allowed: it must be true or false"):
        require_bool(value, "flag")
