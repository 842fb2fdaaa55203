"""Config schema: defaults, validation messages that name the field, overrides, hashing."""

from __future__ import annotations

import pytest

from harness.config import Config, load_config, parse_config
from harness.errors import ConfigError
from tests.conftest import ROOT


def test_empty_file_is_the_default_config(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert load_config(path) == Config()


def test_no_file_is_the_default_backtest_spelled_out_in_configs(tmp_path):
    """`harness run` alone: the field defaults on the last ~2 years of windows, as configs/spx_vol.yaml."""
    from harness.config import DEFAULT_START, default_config

    default = load_config(None)
    assert default == default_config() == Config(data={"start": DEFAULT_START})
    shipped = load_config(ROOT / "configs" / "spx_vol.yaml")
    assert shipped == default and shipped.fingerprint() == default.fingerprint()


def test_defaults_follow_the_design():
    config = Config()
    assert config.data.path == "data/sp500.csv"
    assert config.strategy.name == "volatility_forecast"
    assert config.windows.train == 756 and config.windows.test == 21 and config.windows.purge == 5
    assert config.training.seeds == 3 and config.training.boundary == "fresh"
    assert config.tracking.uri == "./mlruns"
    assert config.schedule_labels()[0] == "constant"
    assert len(config.schedule_labels()) == 8


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"windows": {"train": -5}}, "windows.train: must be > 0, got -5"),
        ({"windows": {"test": 0}}, "windows.test: must be > 0, got 0"),
        ({"windows": {"purge": -1}}, "windows.purge: must be >= 0, got -1"),
        ({"training": {"lr": 0}}, "training.lr: must be > 0, got 0"),
        ({"training": {"lr": -0.1}}, "training.lr: must be > 0, got -0.1"),
        ({"training": {"epochs": "many"}}, "training.epochs: must be an integer, got 'many'"),
        ({"training": {"boundary": "warm"}}, "training.boundary: must be one of"),
        ({"trainig": {}}, "trainig: unknown key (did you mean 'training'?)"),
        ({"training": {"epoch": 3}}, "training.epoch: unknown key (did you mean 'epochs'?)"),
        ({"model": {"activation": "relux"}}, "model.activation: must be one of"),
        ({"model": {"hidden": [64, 0]}}, "model.hidden: must be a non-empty list of positive widths"),
        ({"selection": {"alpha": 1.5}}, "selection.alpha: must be < 1, got 1.5"),
        ({"schedules": ["cosin"]}, "did you mean 'cosine'?"),
        ({"schedules": []}, "schedules: must list at least one schedule"),
        ({"schedules": ["cosine", "cosine"]}, "schedules: lists cosine twice"),
        ({"schedules": ["schedule_free"], "training": {"optimizer": "sgd"}}, "use training.optimizer: adamw"),
        ({"data": {"source": "excel"}}, "data.source: must be one of"),
        ({"experiment": "  "}, "experiment: must be a non-empty name"),
    ],
)
def test_bad_values_name_the_field(raw, expected):
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    message = str(info.value)
    assert expected in message
    assert "\n" not in message


def test_unknown_schedule_error_names_the_position():
    with pytest.raises(ConfigError, match=r"^schedules\[1\]: unknown schedule 'cosin'"):
        parse_config({"schedules": ["constant", "cosin"]})


def test_invalid_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("training: {epochs: [1,\n")
    with pytest.raises(ConfigError, match="is not valid YAML at line"):
        load_config(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("42\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(scalar)


def test_overrides_are_validated_like_file_values(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("training: {epochs: 7}\n")
    config = load_config(path, {"training.seeds": 2, "windows.train": "3Y"})
    assert config.training.epochs == 7 and config.training.seeds == 2 and config.windows.train == "3Y"
    with pytest.raises(ConfigError, match="training.seeds: must be > 0"):
        load_config(path, {"training.seeds": 0})


def test_round_trip_through_yaml(tmp_path):
    config = parse_config({"training": {"epochs": 3}, "schedules": ["constant", {"name": "cosine", "warmup": 0.1}]})
    path = tmp_path / "resolved.yaml"
    path.write_text(config.to_yaml())
    assert load_config(path) == config


def test_fingerprint_tracks_what_changes_results():
    base = Config()
    assert base.fingerprint() == Config().fingerprint()
    assert parse_config({"training": {"epochs": 3}}).fingerprint() != base.fingerprint()
    assert parse_config({"tracking": {"uri": "/elsewhere"}}).fingerprint() == base.fingerprint()
    assert parse_config({"execution": {"executor": "process", "workers": 2}}).fingerprint() == base.fingerprint()


def test_a_listed_schedule_parameter_expands_to_a_grid():
    config = parse_config({"schedules": ["constant", {"name": "cosine", "min_lr_ratio": [0, 0.01, 0.1], "warmup": 0.1}]})
    assert config.schedule_labels() == [
        "constant", "cosine(warmup=0.1)", "cosine(min_lr_ratio=0.01, warmup=0.1)", "cosine(min_lr_ratio=0.1, warmup=0.1)",
    ]


def test_grids_multiply_and_list_valued_parameters_need_a_list_of_lists():
    config = parse_config({"schedules": [
        {"name": "multistep", "milestones": [0.3, 0.6]},
        {"name": "multistep", "milestones": [[0.2, 0.6], [0.5, 0.8]], "gamma": [0.1, 0.5]},
    ]})
    labels = config.schedule_labels()
    assert len(labels) == 1 + 2 * 2 and labels[0] == "multistep(milestones=[0.3, 0.6])"
    assert "multistep(milestones=[0.5, 0.8], gamma=0.5)" in labels


def test_a_grid_with_a_bad_value_names_its_position():
    with pytest.raises(ConfigError, match=r"^schedules\[2\]: schedule 'step'.*gamma"):
        parse_config({"schedules": ["constant", {"name": "step", "gamma": [0.5, -1.0]}]})
