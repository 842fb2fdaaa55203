"""Config schema: defaults, validation messages that name the field, overrides, hashing."""

from __future__ import annotations

import pytest

from harness.config import Config, load_config, parse_config
from harness.errors import ConfigError
from tests.conftest import ROOT


@pytest.mark.parametrize("text", ["", "\n", "# only a comment\n", "{}\n"])
def test_an_empty_file_is_the_default_backtest(tmp_path, text):
    """An empty file, no file (`harness run` alone) and ``Config()`` are one backtest: the same
    config, the same hash, hence the same 25 windows (not the whole 1999-2018 history)."""
    from harness.config import DEFAULT_START, default_config

    path = tmp_path / "empty.yaml"
    path.write_text(text)
    empty = load_config(path)
    assert empty == default_config() == load_config(None) == Config()
    assert empty.fingerprint() == default_config().fingerprint()
    assert empty.data.start == DEFAULT_START


def test_the_default_start_belongs_to_the_default_file_only(tmp_path):
    """``data.start`` defaults to DEFAULT_START on the bundled default file alone; ``null`` takes all of it."""
    from harness.config import DEFAULT_START

    assert parse_config({"training": {"epochs": 3}}).data.start == DEFAULT_START
    assert parse_config({"data": {"path": "data/sp500.csv"}}).data.start == DEFAULT_START
    assert parse_config({"data": {"start": None}}).data.start is None
    assert parse_config({"data": {"start": "2005-01-01"}}).data.start == "2005-01-01"
    assert parse_config({"data": {"path": "data/nasdaq.csv"}}).data.start is None
    assert parse_config({"data": {"source": "synthetic"}}).data.start is None
    assert load_config(None, {"data.start": None}).data.start is None  # --set data.start=null
    round_trip = tmp_path / "whole.yaml"
    round_trip.write_text(parse_config({"data": {"start": None}}).to_yaml())
    assert load_config(round_trip).data.start is None


def test_numbers_with_exponents_are_numbers_everywhere(tmp_path):
    """YAML 1.1 (PyYAML) reads ``1e-2`` as a string; config files and ``--set`` values read it as 0.01."""
    from harness.config import read_yaml

    path = tmp_path / "c.yaml"
    path.write_text(
        "training: {lr: 1e-3, weight_decay: 1E-4, epochs: 1e1}\n"
        "strategy: {name: return_forecast, params: {cost_bps: 5e-1}}\n"
        "schedules: [{name: cosine, min_lr_ratio: 1e-2}, {name: step, gamma: 5.0e-1}, {name: wsd, warmup: .5e-1}]\n"
        "selection: {alpha: +1.e-1}\n"
    )
    config = load_config(path, {"training.momentum": read_yaml("8.5e-1")})
    assert (config.training.lr, config.training.weight_decay, config.training.epochs) == (1e-3, 1e-4, 10)
    assert config.training.momentum == 0.85 and config.selection.alpha == 0.1
    assert config.strategy.params == {"cost_bps": 0.5}
    assert config.schedules == [{"name": "cosine", "min_lr_ratio": 0.01}, {"name": "step", "gamma": 0.5},
                                {"name": "wsd", "warmup": 0.05}]
    # what stays as YAML has it: integers, dates, strings that only look like numbers
    assert read_yaml("[12, 0x1f, 1_000, 2013-10-01, 1e, e5, '1e-2', 1.5]") == [
        12, 31, 1000, __import__("datetime").date(2013, 10, 1), "1e", "e5", "1e-2", 1.5]


def test_exponents_in_the_wrong_place_name_the_field(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("training: {epochs: 1e-2}\n")
    with pytest.raises(ConfigError, match=r"^training.epochs: must be an integer, got 0.01$"):
        load_config(path)


@pytest.mark.parametrize(("stop", "patience"), [(s, p) for s in (1, 2, 3, 5, 8) for p in range(s + 2)])
def test_a_plateau_that_cannot_act_before_early_stopping_gets_a_warning(caplog, stop, patience):
    """Plateau cuts after ``patience + 1`` bad epochs, early stopping ends a member after ``stop``:
    it warns exactly when ``patience + 1 >= stop`` (the training test below checks that rule)."""
    from harness.config import inert_schedules

    config = parse_config({"training": {"patience": stop},
                           "schedules": ["constant", {"name": "plateau", "patience": patience}]})
    messages = inert_schedules(config)
    assert bool(messages) == (patience + 1 >= stop)
    if messages:
        (message,) = messages
        label = "plateau" if patience == 5 else f"plateau(patience={patience})"  # 5: the default, unlabelled
        assert message.startswith(f"schedules[1]: {label} never lowers the LR")
        assert f"training.patience: {stop}" in message and f"raise training.patience to >= {patience + 2}" in message
        assert "\n" not in message


def test_the_plateau_warning_is_logged_on_load_and_not_without_early_stopping(tmp_path, caplog):
    path = tmp_path / "c.yaml"
    path.write_text("training: {patience: 5}\nschedules: [constant, plateau]\n")
    with caplog.at_level("WARNING", logger="harness.config"):
        load_config(path)
    assert [r.getMessage().split(":")[0] for r in caplog.records] == ["schedules[1]"]
    caplog.clear()
    for text in ("schedules: [constant, plateau]\n",  # no early stopping
                 "training: {patience: 5, validation: 0}\nschedules: [plateau]\n",  # no validation: no stopping
                 "training: {patience: 5}\nschedules: [constant, {name: plateau, patience: 3}]\n"):
        path.write_text(text)
        with caplog.at_level("WARNING", logger="harness.config"):
            load_config(path)
    assert not caplog.records
    with caplog.at_level("WARNING", logger="harness.config"):
        load_config(ROOT / "configs" / "ndx_returns.yaml")  # its plateau acts (patience 2, early stopping 5)
    assert not caplog.records


def test_the_warning_rule_is_what_training_does(one_thread):
    """Over a grid of (early-stopping patience, plateau patience): the plateau member's LRs equal the
    constant member's exactly when :func:`inert_schedules` warns."""
    import numpy as np

    from harness.config import inert_schedules
    from harness.training import train

    rng = np.random.default_rng(0)
    X, Xv = rng.normal(size=(200, 3)).astype(np.float32), rng.normal(size=(60, 3)).astype(np.float32)
    y = (X[:, 0] + 0.5 * rng.normal(size=200)).astype(np.float32)
    yv = (Xv[:, 0] + 0.5 * rng.normal(size=60)).astype(np.float32)
    for stop in (3, 4):
        for patience in range(stop + 1):
            schedules = ["constant", {"name": "plateau", "patience": patience}]
            result = train(X, y, Xv, yv, schedules=schedules, seeds=2, epochs=40, batch_size=50, lr=0.05,
                           patience=stop, model={"hidden": [8]})
            lr = np.nan_to_num(np.asarray(result.lr))
            inert = np.array_equal(lr[:2], lr[2:])
            warned = bool(inert_schedules(parse_config({"training": {"patience": stop}, "schedules": schedules})))
            assert inert == warned, (stop, patience)


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
        ({"data": {"delimiter": ";;"}}, "data.delimiter: must be one separator character"),
        ({"data": {"delimiter": "a"}}, "data.delimiter: must be one separator character"),
        ({"data": {"decimal": ";"}}, "data.decimal: must be one of"),
        ({"data": {"dayfirst": "maybe"}}, "data.dayfirst: must be true or false"),
        ({"data": {"periods_per_year": 0}}, "data.periods_per_year: must be > 0, got 0"),
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
