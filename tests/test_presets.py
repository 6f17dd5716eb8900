"""The shipped presets load, validate, and say what they are for."""

import pytest

from engine.config import ConfigError, list_presets, load_preset, validate
from engine.model.estimates import parameter_count

REQUIRED = {"tiny", "small", "base", "laptop"}


def test_required_presets_exist_with_a_description():
    presets = {p.name: p for p in list_presets()}
    assert REQUIRED <= set(presets)
    for preset in presets.values():
        assert len(preset.description) > 20, preset.name


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_preset_is_valid(name):
    config = load_preset(name)
    assert config.name == name
    assert validate(config, cuda_available=False) == []


def test_tiny_is_the_seed_ultra_fast_mode():
    m, t = load_preset("tiny").model, load_preset("tiny").train
    assert (m.num_layers, m.num_dims, m.num_heads, m.num_kv_heads, m.ffn_hidden_dims, m.context_len) == (
        1, 64, 4, 2, 256, 128,
    )
    assert (t.max_seq_len, t.batch_size) == (64, 4)


def test_small_fixes_the_seed_head_count():
    m = load_preset("small").model
    assert (m.num_layers, m.num_dims) == (12, 512)
    assert m.num_dims % m.num_heads == 0


def test_base_is_the_seed_default():
    m = load_preset("base").model
    assert (m.num_layers, m.num_dims, m.num_heads, m.num_kv_heads, m.ffn_hidden_dims, m.context_len) == (
        30, 768, 16, 4, 1024, 2048,
    )
    assert 100e6 < parameter_count(m) < 150e6


def test_unknown_preset_lists_the_real_ones():
    with pytest.raises(ConfigError) as caught:
        load_preset("huge")
    assert "no preset named 'huge'; presets are" in str(caught.value)
    assert "tiny" in str(caught.value)
