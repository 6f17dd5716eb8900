"""TOML load / save, unknown keys, wrong types, and --set overrides."""

import dataclasses

import pytest

from engine.config import (
    ConfigError,
    RunConfig,
    TrainConfig,
    apply_overrides,
    dumps_config,
    load_config,
    loads_config,
    save_config,
)


def test_round_trip_is_exact(tmp_path):
    original = apply_overrides(RunConfig(name="exp"), [
        "train.learning_rate=3e-4", "train.betas=[0.8, 0.99]", "model.rope_theta=500000.5",
        "data.source=/data/my text", "lora.target_modules=q_proj,k_proj,v_proj",
        "model.use_cache=false", "train.time_budget_s=90",
    ])
    path = save_config(original, tmp_path / "run.toml", header="what this run is for")
    loaded = load_config(path)
    assert loaded == original
    assert dumps_config(loaded) == dumps_config(original)
    assert path.read_text().startswith("# what this run is for\n")


def test_missing_keys_take_defaults():
    config = loads_config("[model]\nnum_layers = 2\n")
    assert config.model.num_layers == 2
    assert config.train == RunConfig().train


def test_unknown_key_suggests_the_right_one():
    with pytest.raises(ConfigError) as caught:
        loads_config("[train]\nlearnig_rate = 1e-3\n", "my.toml")
    assert "train.learnig_rate = 0.001: unknown setting (did you mean train.learning_rate?)" in str(caught.value)
    assert "in my.toml" in str(caught.value)


def test_key_in_wrong_section_points_to_its_section():
    with pytest.raises(ConfigError) as caught:
        loads_config("[model]\nbatch_size = 8\n")
    assert "did you mean train.batch_size?" in str(caught.value)


def test_unknown_section_and_top_level_key():
    with pytest.raises(ConfigError) as caught:
        loads_config("learning_rate = 1\n[optim]\nx = 1\n")
    text = str(caught.value)
    assert "unknown section [optim]" in text
    assert "learning_rate = 1: unknown top-level key (did you mean train.learning_rate?)" in text


def test_wrong_types_are_refused_not_converted():
    with pytest.raises(ConfigError) as caught:
        loads_config('[train]\nbatch_size = "eight"\nuse_compile = 1\nlearning_rate = "fast"\n')
    text = str(caught.value)
    assert "train.batch_size = 'eight': expected an integer" in text
    assert "train.use_compile = 1: expected true or false" in text
    assert "train.learning_rate = 'fast': expected a number" in text
    assert caught.value.problems and len(caught.value.problems) == 3


def test_lossless_number_forms_are_accepted():
    config = loads_config("[train]\nlearning_rate = 1\nmax_steps = 1e3\n")
    assert config.train.learning_rate == 1.0 and isinstance(config.train.learning_rate, float)
    assert config.train.max_steps == 1000 and isinstance(config.train.max_steps, int)
    with pytest.raises(ConfigError, match="expected an integer"):
        loads_config("[train]\nmax_steps = 10.5\n")


def test_bad_toml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not valid TOML"):
        loads_config("[model\n")
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "nope.toml")


class DiskFull(OSError):
    pass


class HalfWriter:
    """A file whose write stores half the text, then fails as a full disk would."""

    def __init__(self, handle):
        self.handle = handle

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.close()

    def write(self, text):
        self.handle.write(text[: len(text) // 2])
        self.handle.flush()
        raise DiskFull("no space left on device")

    def __getattr__(self, name):
        return getattr(self.handle, name)


@pytest.mark.parametrize("failing", ["write", "fsync", "replace"])
def test_save_is_atomic_and_keeps_the_old_file_on_failure(tmp_path, monkeypatch, failing):
    """The new text is (partly or wholly) written before the failure: only a write to a
    temporary file and a rename keeps the old config whole."""
    import os

    path = save_config(RunConfig(name="first"), tmp_path / "run.toml")
    old_text = path.read_text()

    def fail(*args, **kwargs):
        raise DiskFull("no space left on device")

    if failing == "write":
        real_fdopen = os.fdopen
        monkeypatch.setattr(os, "fdopen", lambda *a, **k: HalfWriter(real_fdopen(*a, **k)))
    else:
        monkeypatch.setattr(os, failing, fail)
    with pytest.raises(DiskFull):
        save_config(RunConfig(name="second", train=TrainConfig(learning_rate=0.5)), path)
    monkeypatch.undo()
    assert path.read_text() == old_text and load_config(path).name == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["run.toml"]  # no temporary file left behind


@pytest.mark.parametrize(
    "assignment, section, field_name, expected",
    [
        ("train.learning_rate=3e-4", "train", "learning_rate", 3e-4),
        ("train.batch_size=32", "train", "batch_size", 32),
        ("train.use_compile=true", "train", "use_compile", True),
        ("train.use_compile=no", "train", "use_compile", False),
        ("train.betas=0.9,0.99", "train", "betas", (0.9, 0.99)),
        ("train.betas=[0.9, 0.999]", "train", "betas", (0.9, 0.999)),
        ("data.source=wikitext", "data", "source", "wikitext"),
        ("data.hub_config=123", "data", "hub_config", "123"),
        ("learning_rate=0.01", "train", "learning_rate", 0.01),
        ("model.num_dims = 128", "model", "num_dims", 128),
    ],
)
def test_set_parses_with_the_field_type(assignment, section, field_name, expected):
    config = apply_overrides(RunConfig(), [assignment])
    assert getattr(getattr(config, section), field_name) == expected


def test_set_reports_every_bad_assignment():
    with pytest.raises(ConfigError) as caught:
        apply_overrides(RunConfig(), ["train.batch_size=big", "nonsense", "model.num_dimz=3", "optim.lr=1"])
    text = str(caught.value)
    assert "train.batch_size = 'big': expected an integer" in text
    assert "cannot read override 'nonsense'" in text
    assert "did you mean model.num_dims?" in text
    assert len(caught.value.problems) == 4


def test_set_does_not_touch_the_original():
    base = RunConfig()
    changed = apply_overrides(base, ["model.num_layers=9", "name=try-9"])
    assert base.model.num_layers != 9 and changed.model.num_layers == 9
    assert changed.name == "try-9"
    assert dataclasses.replace(changed, name="", model=base.model) == base
