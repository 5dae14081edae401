"""Config mistakes are named (key, valid range or type) before any compilation or data loading."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sla_jax import experiment
from sla_jax.defaults import base_config
from sla_jax.experiment.validation import ConfigError, validate
from tests.tiny import demo_config

REPO = Path(__file__).resolve().parents[1]


def test_unknown_key_in_a_config_file_is_named_with_a_suggestion():
    config = demo_config()
    config.train.unlock()
    config.train.stesp = 10
    with pytest.raises(ConfigError, match=r'config.train.stesp is not a known key. Did you mean "train.steps"\?'):
        validate(config)
    config = demo_config()
    config.unlock()
    config.trian = base_config().train
    with pytest.raises(ConfigError, match=r'config.trian is not a known key. Did you mean "train"\?'):
        validate(config)


@pytest.mark.parametrize(
    "section,key,value,expected",
    [
        ("train", "steps", "100", "int"),
        ("data", "image_size", 64.5, "int"),
        ("labels", "alpha", "10", "float"),
        ("data", "demo", 1, "bool"),
        ("model", "head", 128, "tuple"),
    ],
)
def test_wrong_type_is_named(section, key, value, expected):
    config = demo_config()
    config[section].unlock()
    del config[section][key]
    config[section][key] = value
    with pytest.raises(ConfigError, match=rf"config.{section}.{key}=.* has type .*; it must be {expected}"):
        validate(config)


@pytest.mark.parametrize(
    "key,value,match",
    [
        ("labels.epsilon", 0.0, r"labels.epsilon=0.0 must lie in \(0, 3\)"),
        ("labels.alpha", -0.5, r"labels.alpha=-0.5 must be >= 0"),
        ("train.batch_size", 10, r"train.batch_size=10 must be a positive multiple of 4"),
        ("train.steps", -1, r"train.steps=-1 must be >= 0"),
        ("localization.patch_size", 96, r"localization.patch_size=96 must lie in \(0, data.image_size=64\]"),
    ],
)
def test_out_of_range_values_are_named_with_the_range(key, value, match):
    config = demo_config()
    config.data.image_size = 64
    section, name = key.split(".")
    config[section][name] = value
    with pytest.raises(ConfigError, match=match):
        validate(config)


def test_invalid_config_fails_before_the_workdir_or_data_is_touched(tmp_path):
    config = demo_config()
    config.labels.epsilon = 5.0
    with pytest.raises(ConfigError, match="labels.epsilon"):
        experiment.train_and_evaluate(config, str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "override,message",
    [
        ("--config.train.steps=abc", "error: --config.train.steps: invalid literal for int() with base 10: 'abc'"),
        ("--config.labels.epsilon=7.0", "error: config.labels.epsilon=7.0 must lie in (0, 3)"),
    ],
)
def test_command_line_errors_are_one_clear_line(override, message, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "sla_jax.train", "--config=configs/demo.py", f"--workdir={tmp_path / 'run'}", override],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0 and message in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()
