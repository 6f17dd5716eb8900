"""Configs and TOML fuzzed with hypothesis: whatever a user (or a damaged file) hands the config
layer, the answer is a ConfigError whose every problem names its field and says what to do,
never a traceback."""

import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.config import ConfigError, RunConfig, apply_overrides, config_to_dict, loads_config, validate
from engine.config.schema import SECTIONS, section_fields

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
KEYS = [(section, key) for section in SECTIONS for key in section_fields(section)]
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=True),
                    st.text(max_size=20))
values = st.one_of(scalars, st.lists(scalars, max_size=4), st.dictionaries(st.text(max_size=5), scalars, max_size=3))


def check_problems(error: ConfigError) -> None:
    assert error.problems, "a ConfigError must say what is wrong"
    for problem in error.problems:
        assert problem.message.strip().endswith((".", ")")), problem
        assert len(problem.message) > 10
    assert "Traceback" not in str(error)


@FUZZ
@given(st.dictionaries(st.sampled_from(KEYS), values, max_size=6))
def test_random_values_for_real_settings_load_or_are_refused_with_their_field(changes):
    document = config_to_dict(RunConfig())
    for (section, key), value in changes.items():
        document[section][key] = value
    try:
        config = loads_config(tomli_w.dumps(_tomlable(document)))
    except ConfigError as error:
        check_problems(error)
        named = {p.field for p in error.problems}
        assert named <= {f"{s}.{k}" for s, k in changes} | {""}, named
        return
    for problem in validate(config):  # loaded: every remaining problem still names its field
        assert problem.field and problem.message


@FUZZ
@given(st.dictionaries(st.text(min_size=1, max_size=12), st.one_of(values, st.dictionaries(
    st.text(min_size=1, max_size=12), values, max_size=4)), max_size=5))
def test_unknown_sections_and_keys_are_named(document):
    try:
        text = tomli_w.dumps(_tomlable(document))
    except (TypeError, ValueError):
        return  # not expressible in TOML at all
    try:
        loads_config(text)
    except ConfigError as error:
        check_problems(error)


@FUZZ
@given(st.text(max_size=200))
def test_broken_toml_syntax_is_a_sentence(text):
    try:
        loads_config(text)
    except ConfigError as error:
        check_problems(error)


@FUZZ
@given(st.lists(st.text(max_size=40), max_size=4))
def test_random_overrides_are_applied_or_refused_with_a_sentence(assignments):
    try:
        apply_overrides(RunConfig(), assignments)
    except ConfigError as error:
        check_problems(error)


def _tomlable(value):
    """TOML has no null: drop Nones (a missing key is what a user's file would have)."""
    if isinstance(value, dict):
        return {k: _tomlable(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_tomlable(v) for v in value if v is not None]
    return value


def test_the_fuzzer_reaches_the_refusals():
    """Not vacuous: a wrong type and an unknown key really are refused with their fields."""
    try:
        loads_config('[model]\nnum_heads = "many"\n[train]\nlearning_rat = 1\n')
    except ConfigError as error:
        fields = {p.field for p in error.problems}
        assert fields == {"model.num_heads", "train.learning_rat"}
    else:
        raise AssertionError("a string for num_heads and a misspelt key must be refused")
