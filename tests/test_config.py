"""Config loading and the CLI's handling of bad input: every problem is one line on stderr that
names the key, exit code 2, no traceback, no run directory; and overrides reach the saved config."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO_ROOT
from trainer.core.config import Config, dump_config, load_config
from trainer.core.errors import ConfigError

SMALL_YAML = """\
execution: inline
ppo:
  total_steps: 64
  rollout_steps: 16
  num_minibatches: 2
  update_epochs: 1
  lr: 5.0e-4
workers:
  num_workers: 1
  envs_per_worker: 2
logging:
  progress_interval_s: 1000
"""


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "trainer", "train", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


CASES = {
    "missing file": (None, [], r"config file not found: .*nope\.yaml"),
    "not yaml": ("ppo: [1, 2\nworkers: {", [], r"config file .* is not valid YAML at line \d+"),
    "binary file": (b"PK\x03\x04\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19.", [], r"config file .*nope\.yaml"),
    "not a mapping": ("- 1\n- 2\n", [], r"must hold a mapping of keys, got list"),
    "unknown key in file": (SMALL_YAML + "polcy:\n  kind: mlp\n", [], r"polcy: unknown key"),
    "unknown key": (SMALL_YAML, ["ppo.lrr=0.1"], r"ppo\.lrr: unknown key"),
    "wrong type": (SMALL_YAML, ["ppo.rollout_steps=many"], r"ppo\.rollout_steps: .*integer.*'many'"),
    "negative lr": (SMALL_YAML, ["ppo.lr=-0.001"], r"ppo\.lr: Input should be greater than 0 \(got -0\.001\)"),
    "minibatches do not divide": (
        SMALL_YAML,
        ["ppo.num_minibatches=3"],
        r"ppo\.num_minibatches \(3\) must divide the 32 samples",
    ),
    "sequence length does not divide": (
        SMALL_YAML,
        ["policy.kind=lstm", "ppo.sequence_length=5"],
        r"ppo\.sequence_length \(5\) must divide ppo\.rollout_steps \(16\)",
    ),
    "set without =": (SMALL_YAML, ["ppo.lr"], r"override 'ppo\.lr' must look like key\.path=value"),
    "set with bad yaml": (SMALL_YAML, ["ppo.lr=[1"], r"override 'ppo\.lr=\[1': value .* is not valid YAML"),
    "set into a value": (SMALL_YAML, ["ppo.lr.x=1"], r"override 'ppo\.lr\.x=1': lr is not a section"),
    "unknown env id": (SMALL_YAML, ["env.id=NoSuchEnv-v0"], r"env\.id 'NoSuchEnv-v0'.*doesn't exist"),
    "entry point does not import": (
        SMALL_YAML,
        ["env.id=no_such_package.envs:MyEnv"],
        r"env\.id 'no_such_package\.envs:MyEnv': cannot import module 'no_such_package\.envs'",
    ),
    "entry point has no such class": (
        SMALL_YAML,
        ["env.id=tests.envs_for_tests:NoSuchEnv"],
        r"module 'tests\.envs_for_tests' has no attribute 'NoSuchEnv'",
    ),
    "env kwargs do not fit": (
        SMALL_YAML,
        ["env.id=tests.envs_for_tests:StepCounterEnv", "env.kwargs={size: 3}"],
        r"env\.kwargs for 'tests\.envs_for_tests:StepCounterEnv' do not fit",
    ),
    "bad learner device": (SMALL_YAML, ["learner.device=gpu"], r"learner\.device.*'gpu'"),
    "negative seed": (SMALL_YAML, ["seed=-1"], r"seed"),
    "unsupported observation space": (
        SMALL_YAML,
        ["env.id=tests.bad_envs:SequenceObservationEnv"],
        r"observation space Sequence .* at 'path' is not supported.*add an observation wrapper to env\.wrappers",
    ),
    "every problem listed": (
        SMALL_YAML,
        ["ppo.lr=-1", "ppo.lrr=1", "workers.num_workers=0"],
        r"ppo\.lr: .*ppo\.lrr: unknown key.*workers\.num_workers: ",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_cli_reports_bad_input_in_one_line(tmp_path: Path, case: str) -> None:
    text, overrides, expected = CASES[case]
    config_path = tmp_path / "nope.yaml"
    if isinstance(text, bytes):
        config_path.write_bytes(text)
    elif text is not None:
        config_path.write_text(text)
    run_dir = tmp_path / "run"
    args = [str(config_path), "--run-dir", str(run_dir)]
    for item in overrides:
        args += ["--set", item]
    result = run_cli(*args)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert re.search(expected, lines[0]), lines[0]
    assert not run_dir.exists()  # nothing half-written


def test_cli_override_is_applied_and_resolved_config_saved(tmp_path: Path) -> None:
    config_path = tmp_path / "small.yaml"
    config_path.write_text(SMALL_YAML)
    run_dir = tmp_path / "run"
    result = run_cli(str(config_path), "--set", "ppo.lr=1e-3", "--set", "seed=5", "--run-dir", str(run_dir))
    assert result.returncode == 0, result.stderr
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["ppo"]["lr"] == 1e-3  # overrides the file's 5e-4
    assert saved["seed"] == 5
    assert saved["ppo"]["rollout_steps"] == 16  # from the file
    assert saved["ppo"]["gamma"] == 0.99 and saved["policy"]["kind"] == "mlp"  # defaults, resolved
    assert saved["name"] == "small"
    assert load_config(run_dir / "config.yaml") == load_config(config_path, ["ppo.lr=1e-3", "seed=5"])
    assert (run_dir / "summary.json").is_file()


@pytest.mark.parametrize("path", sorted((REPO_ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load(path: Path) -> None:
    config = load_config(path)
    assert config.name == path.stem
    assert config.num_iterations >= 1
    assert load_config(yaml.safe_load(dump_config(config))) == config  # the dump round-trips


def test_overrides_build_sections_and_parse_yaml_values() -> None:
    config = load_config({}, ["env.kwargs={a: 1}", "policy.hidden_sizes=[32, 32]", "ppo.value_clip=0.2"])
    assert config.env.kwargs == {"a": 1}
    assert config.policy.hidden_sizes == [32, 32]
    assert config.ppo.value_clip == 0.2
    assert isinstance(load_config({}), Config)


def test_config_error_lists_every_problem() -> None:
    with pytest.raises(ConfigError) as info:
        load_config({"ppo": {"gamma": 1.5, "clip_coef": 0}, "policy": {"hidden_sizes": [0]}})
    message = str(info.value)
    assert "\n" not in message
    assert "ppo.gamma: Input should be less than or equal to 1 (got 1.5)" in message
    assert "ppo.clip_coef: Input should be greater than 0 (got 0)" in message
    assert "hidden_sizes must be a list of positive ints, got [0]" in message
