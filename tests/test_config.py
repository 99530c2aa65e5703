"""Config loading and the CLI's handling of bad input: every problem is one line on stderr that
names the key, exit code 2, no traceback, no run directory; and overrides reach the saved config."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import get_args, get_origin

import pytest
import torch
import yaml

import trainer
from tests.conftest import REPO_ROOT, make_small_config
from trainer.core.config import OPAQUE_FIELDS, Config, Section, dump_config, is_opaque, load_config
from trainer.core.errors import ConfigError, UserError
from trainer.core.seeding import derive_seed
from trainer.core.yaml_files import parse_yaml, read_yaml
from trainer.runtime.metrics import flat_hparams
from trainer.runtime.resume import config_changes
from trainer.sweep.space import is_config_key

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
        ["env.id=tests.envs.toy:NoSuchEnv"],
        r"module 'tests\.envs\.toy' has no attribute 'NoSuchEnv'",
    ),
    "env kwargs do not fit": (
        SMALL_YAML,
        ["env.id=tests.envs.toy:StepCounterEnv", "env.kwargs={size: 3}"],
        r"env\.kwargs for 'tests\.envs\.toy:StepCounterEnv' do not fit",
    ),
    "bad learner device": (SMALL_YAML, ["learner.device=gpu"], r"learner\.device.*'gpu'"),
    "negative seed": (SMALL_YAML, ["seed=-1"], r"seed"),
    "unsupported observation space": (
        SMALL_YAML,
        ["env.id=tests.envs.bad:SequenceObservationEnv"],
        r"observation space Sequence .* at 'path' is not supported.*add an observation wrapper to env\.wrappers",
    ),
    "duplicate section": (
        SMALL_YAML + "ppo:\n  lr: 1.0e-3\n",
        [],
        r"config file .*nope\.yaml: key ppo is given twice \(lines 2 and 13\), and the second would replace the "
        r"first; keep one$",
    ),
    "duplicate nested key": (
        "ppo:\n  lr: 1.0e-3\n  gamma: 0.9\n  lr: 2.0e-3\n",
        [],
        r"config file .*nope\.yaml: key ppo\.lr is given twice \(lines 2 and 4\)",
    ),
    "tab": (
        "ppo:\n\tlr: 1.0e-3\n",
        [],
        r"config file .*nope\.yaml is not valid YAML at line 2: found character '\\t' that cannot start any token "
        r"\(YAML indents with spaces, not tabs\)$",
    ),
    "infinite lr": (SMALL_YAML, ["ppo.lr=.inf"], r"ppo\.lr: Input should be a finite number \(got inf\)$"),
    "empty key part": (
        SMALL_YAML,
        ["ppo..lr=1"],
        r"override 'ppo\.\.lr=1': the key path 'ppo\.\.lr' has an empty part; write it as section\.key, "
        r"e\.g\. ppo\.lr$",
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


def float_keys(model: type[Section] = Config, prefix: str = "") -> list[str]:
    """Every float key of the config models (`workers.resources.*` as `workers.resources.x`)."""
    keys = []
    for name, field in model.model_fields.items():
        annotation, args = field.annotation, get_args(field.annotation)
        if isinstance(annotation, type) and issubclass(annotation, Section):
            keys += float_keys(annotation, f"{prefix}{name}.")
        elif get_origin(annotation) is dict:
            keys += [f"{prefix}{name}.x"] if args[1] is float else []
        elif annotation is float or float in args:
            keys.append(prefix + name)
    return keys


FLOAT_KEYS = float_keys()


@pytest.mark.parametrize("value, shown", [(".inf", "inf"), ("-.inf", "-inf"), (".nan", "nan")])
@pytest.mark.parametrize("key", FLOAT_KEYS)
def test_every_float_key_refuses_inf_and_nan(key: str, value: str, shown: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config({}, [f"{key}={value}"])
    assert str(info.value) == f"invalid config (config): {key}: Input should be a finite number (got {shown})"


def test_float_key_table_holds_the_keys_that_crashed() -> None:
    crashed = {"workers.num_cpus", "workers.sample_timeout_s", "ppo.lr"}
    one_per_section = {"env.reward_threshold", "ppo.value_clip", "workers.resources.x", "learner.num_gpus"}
    one_per_section |= {"cluster.wait_for_resources_s", "eval.num_cpus", "logging.progress_interval_s"}
    assert crashed | one_per_section <= set(FLOAT_KEYS)


def test_eval_env_refuses_inf_in_the_keys_it_replaces() -> None:
    with pytest.raises(ConfigError, match=r"eval\.env\.reward_threshold: Input should be a finite number \(got nan\)"):
        load_config({}, ["eval.env={reward_threshold: .nan}"])


def test_yaml_reader_is_reusable_with_another_error_and_name(tmp_path: Path) -> None:
    """What the sweep's search space reader can call: its own error type and file name."""

    class SpaceError(UserError):
        pass

    space = tmp_path / "space.yaml"
    space.write_text("ppo.lr: {choice: [1.0e-3]}\nseed: {grid: [1, 2]}\nppo.lr: {uniform: [0.1, 0.2]}\n")
    with pytest.raises(SpaceError) as info:
        read_yaml(space, "search space file", SpaceError)
    assert str(info.value) == (
        f"search space file {space}: key ppo.lr is given twice (lines 1 and 3), and the second would replace the "
        "first; keep one"
    )
    with pytest.raises(SpaceError, match=r"^search space file not found: "):
        read_yaml(tmp_path / "nope.yaml", "search space file", SpaceError)
    space.write_text("ppo.lr: {choice: [1.0e-3]}\nseed: {grid: [1, 2]}\n")
    assert read_yaml(space, "search space file", SpaceError) == {
        "ppo.lr": {"choice": [1.0e-3]},
        "seed": {"grid": [1, 2]},
    }


def test_duplicate_keys_refused_at_any_depth_but_merge_keys_may_be_overridden(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(
        "env:\n  wrappers:\n    - name: ClipReward\n      kwargs: {min_reward: -1,\n        min_reward: 1}\n"
    )
    with pytest.raises(
        ConfigError, match=r"key env\.wrappers\[0\]\.kwargs\.min_reward is given twice \(lines 4 and 5\)"
    ):
        load_config(path)
    path.write_text("base: &base {lr: 1.0e-3, gamma: 0.9}\n")  # anchors are fine; an unknown key is not
    with pytest.raises(ConfigError, match=r"base: unknown key"):
        load_config(path)
    merged = parse_yaml("common: &common {lr: 1.0e-3, gamma: 0.9}\nppo:\n  <<: *common\n  lr: 2.0e-3\n", "test")
    assert merged["ppo"] == {"lr": 2.0e-3, "gamma": 0.9}
    with pytest.raises(ConfigError, match=r"^override 'env\.kwargs=\{a: 1, a: 2\}': value .*: key a is given twice"):
        load_config({}, ["env.kwargs={a: 1, a: 2}"])


def test_a_directory_as_the_config_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^config file .* is a directory, not a file; give the path of a YAML file$"):
        load_config(tmp_path)
    (tmp_path / "cartpole.yaml").write_text(SMALL_YAML)
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    assert str(info.value).endswith(f"give one of its YAML files, e.g. {tmp_path / 'cartpole.yaml'}")


def test_a_single_string_of_overrides_is_one_override(tmp_path: Path) -> None:
    path = tmp_path / "small.yaml"
    path.write_text(SMALL_YAML)
    assert load_config(path, "ppo.lr=1e-3") == load_config(path, ["ppo.lr=1e-3"])
    assert load_config(path, "ppo.lr=1e-3").ppo.lr == 1e-3
    with pytest.raises(ConfigError, match=r"^invalid config \(config\): ppo\.lrr: unknown key$"):
        trainer.train({}, overrides="ppo.lrr=1", run_dir=tmp_path / "run")  # not 'p', 'p', 'o', ...
    assert not (tmp_path / "run").exists()


TIMESTAMP_SEED = 1764950000000000000  # a nanosecond timestamp; seed * 10_000 overflowed int64


def test_derived_seeds_are_63_bit_distinct_and_stable_for_any_seed() -> None:
    seeds = [
        derive_seed(seed, role, *index)
        for seed in (0, 1, TIMESTAMP_SEED, 10**40)
        for role, index in [("learner", ()), ("worker envs", (0,)), ("worker envs", (1,)), ("worker envs", (1, 7))]
    ]
    assert all(0 <= s < 2**63 for s in seeds)
    assert len(set(seeds)) == len(seeds)
    assert derive_seed(TIMESTAMP_SEED, "worker envs", 1, 7) == derive_seed(TIMESTAMP_SEED, "worker envs", 1, 7)


def test_timestamp_seed_trains_and_the_same_seed_trains_the_same(inline_runtime) -> None:
    def one_iteration(seed: int) -> tuple[dict, float]:
        runtime = inline_runtime(make_small_config(seed=seed))
        stats = runtime.iterate()
        return runtime.policy_weights().weights["policy"], stats.metrics["losses/value"]

    weights, value_loss = one_iteration(TIMESTAMP_SEED)
    again, value_loss_again = one_iteration(TIMESTAMP_SEED)
    other, _ = one_iteration(TIMESTAMP_SEED + 1)
    assert value_loss == value_loss_again
    assert all(torch.equal(weights[name], again[name]) for name in weights)
    assert not all(torch.equal(weights[name], other[name]) for name in weights)


def test_opaque_settings_are_the_mappings_and_stay_whole_in_hparams_resume_and_sweeps() -> None:
    """The settings typed as a mapping hold the user's keys, not config keys: TensorBoard's hparams
    log each as text, a resume reports its change in one line, a sweep may set any key inside it."""
    assert OPAQUE_FIELDS == {"env.kwargs", "workers.resources", "eval.env", "policies", "policy_mapping"}
    assert is_opaque("env.kwargs.a.b") and not is_opaque("env.kwargsx") and not is_opaque("env.id")
    old = load_config({"env": {"kwargs": {"a.b": 1}}, "eval": {"env": {"kwargs": {"q": 1}}}})
    new = load_config(old, ["env.kwargs.c=2", "workers.resources.slot=1", "eval.env.kwargs.q=2", "ppo.lr=0.001"])
    hparams = flat_hparams(new)
    assert [(key, value) for key, value in hparams.items() if is_opaque(key)] == [
        ("env.kwargs", "{'a.b': 1, 'c': 2}"), ("workers.resources", "{'slot': 1.0}"),
        ("eval.env", "{'kwargs': {'q': 2}}"), ("policies", "{}"), ("policy_mapping", "{}")]  # fmt: skip
    assert hparams["ppo.lr"] == 0.001 and hparams["eval.every"] == 0  # the other mappings are sections
    assert config_changes(old.model_dump(), new) == [
        "env.kwargs {'a.b': 1} -> {'a.b': 1, 'c': 2}", "eval.env {'kwargs': {'q': 1}} -> {'kwargs': {'q': 2}}",
        "ppo.lr 0.00025 -> 0.001", "workers.resources {} -> {'slot': 1.0}"]  # fmt: skip
    assert all(is_config_key(field) and is_config_key(f"{field}.any.key") for field in OPAQUE_FIELDS)
    assert not is_config_key("env.wrappers.0.kwargs") and not is_config_key("ppo.lr.x")
