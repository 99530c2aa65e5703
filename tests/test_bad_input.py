"""Bad input through the CLI: one clear message naming the problem, a non-zero exit, and not one
byte changed in an existing run directory."""

from __future__ import annotations

import hashlib
import resource
import signal
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import INLINE_ARGS, cli
from trainer.runtime.checkpoint import load_checkpoint

SMALL = INLINE_ARGS


def fingerprint(directory: Path) -> dict[str, tuple[str, int]]:
    return {
        str(p.relative_to(directory)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def existing_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("existing") / "run"
    result = cli("train", "configs/cartpole.yaml", "--run-dir", str(run_dir), *SMALL, "--set", "ppo.total_steps=1024")
    assert result.returncode == 0, result.stderr
    return run_dir


@pytest.fixture(scope="module")
def bad_checkpoints(tmp_path_factory, existing_run) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("bad")
    good = sorted((existing_run / "checkpoints").glob("iter_*.pt"))[-1]
    data = good.read_bytes()
    truncated = directory / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    corrupted = directory / "corrupted.pt"
    corrupted.write_bytes(bytes(b ^ 0x5A for b in data[:4096]) + data[4096:])
    _, state = load_checkpoint(good)
    other_version = directory / "other_version.pt"
    torch.save({**state, "format_version": 99}, other_version)
    not_a_run = directory / "not_a_run"
    not_a_run.mkdir()
    return {"truncated": truncated, "corrupted": corrupted, "other_version": other_version, "not_a_run": not_a_run}


CASES = {
    "missing config": (["train", "configs/nope.yaml"], "config file not found: configs/nope.yaml"),
    "not YAML": (["train", "{bad_yaml}"], "is not valid YAML at line"),
    "unknown key": (["train", "configs/cartpole.yaml", "--set", "ppo.lrr=1"], "ppo.lrr: unknown key"),
    "wrong type": (["train", "configs/cartpole.yaml", "--set", "ppo.rollout_steps=many"], "ppo.rollout_steps: Input should be a valid integer"),
    "out of range": (["train", "configs/cartpole.yaml", "--set", "ppo.lr=-0.1"], "ppo.lr: Input should be greater than 0"),
    "unknown env": (["train", "configs/cartpole.yaml", "--set", "env.id=NoSuchEnv-v0"], "env.id 'NoSuchEnv-v0': Environment `NoSuchEnv` doesn't exist"),
    "entry point": (["train", "configs/cartpole.yaml", "--set", "env.id=no_such_module:Env"], "cannot import module 'no_such_module'"),
    "observation space": (["train", "configs/cartpole.yaml", "--set", "env.id=tests.envs.bad:SequenceObservationEnv"], "env 'tests.envs.bad:SequenceObservationEnv': observation space Sequence (Sequence(Box(0.0, 1.0, (2,), float32), stack=False)) at 'path' is not supported (Box, Discrete, 1-D MultiDiscrete, MultiBinary, Dict and Tuple are); add an observation wrapper to env.wrappers that turns it into a Box"),
    "action space": (["train", "configs/cartpole.yaml", "--set", "env.id=tests.envs.bad:TupleActionEnv"], "unsupported action space Tuple("),
    "plugin id": (["train", "configs/cartpole.yaml", "--set", "env.id=NoPlugin/Thing-v0"], "env.id 'NoPlugin/Thing-v0': Namespace NoPlugin not found"),
    "env.imports": (["train", "configs/cartpole.yaml", "--set", "env.imports=[no_such_plugin]"], "env.imports 'no_such_plugin' needs no_such_plugin, which is not installed"),
    "wrapper": (["train", "configs/cartpole.yaml", "--set", "env.wrappers=[{{name: NoSuchWrapper}}]"], "env.wrappers[0] (NoSuchWrapper): no such wrapper; give a class of gymnasium.wrappers"),
    "wrapper kwargs": (["train", "configs/cartpole.yaml", "--set", "env.wrappers=[{{name: TimeLimit, kwargs: {{steps: 3}}}}]"], "env.wrappers[0] (TimeLimit): TypeError"),
    "missing checkpoint": (["train", "--resume", "{tmp}/nope.pt"], "checkpoint or run directory not found"),
    "truncated checkpoint": (["train", "--resume", "{truncated}"], "is truncated or corrupted"),
    "corrupted checkpoint": (["train", "--resume", "{corrupted}"], "is corrupted or not a checkpoint (it does not start like a torch.save archive)"),
    "other format version": (["train", "--resume", "{other_version}"], "has format version 99; this trainer reads versions 1 and 2"),
    "other spaces": (["train", "--resume", "{existing}", "--set", "env.id=MaskedVelocityCartPole-v1"], "was written for observations {obs: vector float32 (4,)} and actions Discrete(2), but env 'MaskedVelocityCartPole-v1' has {obs: vector float32 (2,)}"),
    "not a run directory": (["train", "--resume", "{not_a_run}"], "is not a run directory with checkpoints"),
    "run directory in use": (["train", "configs/cartpole.yaml"], "already holds a run; continue it with --resume"),
    "network changed on resume": (["train", "--resume", "{existing}", "--set", "policy.hidden_sizes=[32,32]"], "holds a different network than this config asks (policy.hidden_sizes [64, 64] -> [32, 32]); resume without changing the network, or start a new run"),
    "Latin-1 config": (["train", "{latin1_yaml}"], "is not UTF-8 (byte 0xe9 on line 2); save it as UTF-8"),
    "buffer too large": (["train", "configs/cartpole.yaml", "--set", "ppo.rollout_steps=100000000"], "GB for rollouts and the learner's buffer (and the network 0.0 GB), and this machine has"),
    "nothing at the address": (["train", "configs/cartpole.yaml", "--set", "execution=ray", "--address", "127.0.0.1:1"], "no Ray cluster answers at 127.0.0.1:1 (Connection refused); start one there with `ray start --head --port=1`, or fix --address / RAY_ADDRESS"),
    "network too large": (["train", "configs/cartpole.yaml", "--set", "env.id=tests.envs.bad:WideObservationEnv", "--set", "ppo.rollout_steps=8", "--set", "ppo.num_minibatches=1"], "has 2,147M parameters (its observations hold 16,777,216 numbers): with its copies in the learner (gradients, Adam), the workers and the object store it needs about"),
    "resume auto without run dir": (["train", "configs/cartpole.yaml", "--resume", "auto"], "--resume auto needs --run-dir DIR"),
    "custom core without state_dims": (["train", "configs/cartpole.yaml", "--set", "policy.kind=tests.envs.networks:NoStateDims"], "NoStateDims declares no valid state_dims (got None): set state_dims = () for a core without memory"),
    "custom core wrong width": (["train", "configs/cartpole.yaml", "--set", "policy.kind=tests.envs.networks:WrongFeatureWidth"], "WrongFeatureWidth.forward returned features (3, 2, 127), expected (3, 2, 128) ([T, B, output_size])"),
    "eval env with other spaces": (["train", "configs/cartpole.yaml", "--set", "eval.every=1", "--set", "eval.env.id=Acrobot-v1"], "eval.env changes what the policy sees or does: training env"),
    "async envs with env resets": (["train", "configs/cartpole.yaml", "--set", "workers.vector_env=async", "--set", "env.on_error=reset"], "env.on_error: reset needs workers.vector_env: sync (an async vector env cannot reset one failed env on its own); use one of them"),
    "unknown vector env": (["train", "configs/cartpole.yaml", "--set", "workers.vector_env=threads"], "workers.vector_env: Input should be 'sync', 'async' or 'envpool'"),
    "envpool with env resets": (["train", "configs/cartpole.yaml", "--set", "workers.vector_env=envpool", "--set", "env.on_error=reset"], "env.on_error: reset needs workers.vector_env: sync (an envpool vector env cannot reset one failed env on its own)"),
    "envpool without the env": (["train", "configs/cartpole.yaml", "--set", "workers.vector_env=envpool", "--set", "env.id=MaskedVelocityCartPole-v1"], "env.id 'MaskedVelocityCartPole-v1': EnvPool has no such env (it has Atari, MuJoCo and classic control ids such as ALE/Breakout-v5, HalfCheetah-v5, CartPole-v1); set workers.vector_env: sync"),
    "envpool wrapper": (["train", "configs/cartpole.yaml", "--set", "workers.vector_env=envpool", "--set", "env.wrappers=[{{name: NormalizeObservation}}]"], "env.wrappers[0] (NormalizeObservation) has no EnvPool equivalent (it maps AtariPreprocessing, EpisodicLife, FireReset, ClipReward to [-1, 1] and FrameStackObservation for Atari ids, none for others); remove it or set workers.vector_env: sync"),
    "envpool Atari option": (["train", "configs/atari_breakout.yaml", "--set", "env.wrappers=[{{name: AtariPreprocessing, kwargs: {{frame_skip: 4, scale_obs: true}}}}]"], "env.wrappers[0] (AtariPreprocessing): scale_obs=True has no EnvPool option; remove it or set workers.vector_env: sync"),
    "action mask the env lacks": (["train", "configs/cartpole.yaml", "--set", "env.action_mask=info"], "env.action_mask is 'info' but env 'CartPole-v1' has no 'action_mask' in the info of a reset; set env.action_mask: auto (or off), or env.action_mask_key to the key it uses"),
    "action mask key misnamed": (["train", "configs/taxi_masked.yaml", "--set", "env.action_mask=observation"], "env.action_mask is 'observation' but env 'Taxi-v4' has no Dict observation key 'action_mask'"),
    "envpool Atari wrapper": (["train", "configs/atari_breakout.yaml", "--set", "env.wrappers=[{{name: AtariPreprocessing}}, {{name: ClipReward, kwargs: {{min_reward: -2, max_reward: 2}}}}]"], "env.wrappers[1] (ClipReward) has no EnvPool equivalent"),
    "YAML error with its reason": (["train", "{bad_yaml}"], "is not valid YAML at line 2: expected ',' or ']', but got '<stream end>'"),
    "config is a directory": (["train", "configs"], "config file configs is a directory, not a file; give one of its YAML files, e.g. configs/"),
    "infinite float": (["train", "configs/cartpole.yaml", "--set", "workers.num_cpus=.inf"], "workers.num_cpus: Input should be a finite number (got inf)"),
    "infinite timeout": (["train", "configs/cartpole.yaml", "--set", "workers.sample_timeout_s=.inf"], "workers.sample_timeout_s: Input should be a finite number (got inf)"),
    "NaN float": (["train", "configs/cartpole.yaml", "--set", "ppo.lr=.nan"], "ppo.lr: Input should be a finite number (got nan)"),
    "empty key part": (["train", "configs/cartpole.yaml", "--set", "ppo..lr=1"], "override 'ppo..lr=1': the key path 'ppo..lr' has an empty part; write it as section.key, e.g. ppo.lr"),
    "duplicate key in an override": (["train", "configs/cartpole.yaml", "--set", "env.kwargs={{a: 1, a: 2}}"], "key a is given twice (line 1), and the second would replace the first; keep one"),
    "wrapper typo": (["train", "configs/cartpole.yaml", "--set", "env.wrappers=[{{name: ClipRewards}}]"], "env.wrappers[0] (ClipRewards): no such wrapper (did you mean ClipReward or NormalizeReward?); give a class of gymnasium.wrappers"),
    "evaluate no episodes": (["evaluate", "{existing}", "--episodes", "0"], "evaluate needs at least 1 episode, got 0 (--episodes N)"),
    "evaluate missing": (["evaluate", "{tmp}/nope.pt"], "checkpoint or run directory not found"),
    "evaluate negative seed": (["evaluate", "{existing}", "--seed", "-1"], "evaluate --seed must be between 0 and 2**64 - 1 (env i is reset with seed + i), got -1"),
    "evaluate video into a file": (["evaluate", "{existing}", "--video", "{existing}/config.yaml"], "config.yaml is a file, not a directory; give a directory you can write (episode_0.mp4 goes in it)"),
    "export under a file": (["export", "{existing}", "{existing}/config.yaml/policy.pt2"], "config.yaml is a file, not a directory; give a path in a directory you can write"),
    "export onto a directory": (["export", "{existing}", "{existing}"], "is a directory; give the program's file path, e.g. "),
    "sweep space key": (["tune", "configs/cartpole.yaml", "--space", "{space_bad_key}", "--out", "{tmp}/sweep"], "'ppo.lrr' is not a config key; use a dotted key of the config (e.g. ppo.lr, ppo.clip_coef, seed)"),
    "sweep sampler": (["tune", "configs/cartpole.yaml", "--space", "{space_bad_sampler}", "--out", "{tmp}/sweep"], "ppo.lr: {'normal': [0.001, 0.0001]} is not a sampler; give one of choice, uniform, loguniform, randint, grid"),
    "sweep value": (["tune", "configs/cartpole.yaml", "--space", "{space_bad_value}", "--out", "{tmp}/sweep"], "ppo.num_minibatches=7 gives an invalid config: ppo.num_minibatches (7) must divide the 1024 samples"),
    "sweep pbt on the network": (["tune", "configs/cartpole.yaml", "--space", "{space_network}", "--scheduler", "pbt", "--out", "{tmp}/sweep"], "--scheduler pbt cannot perturb policy.hidden_sizes: a trial restored from another's checkpoint keeps its network and env; make it a grid axis"),
    "sweep missing space": (["tune", "configs/cartpole.yaml", "--space", "{tmp}/nope.yaml", "--out", "{tmp}/sweep"], "search space file not found"),
    "sweep space is a directory": (["tune", "configs/cartpole.yaml", "--space", "{tmp}", "--out", "{tmp}/sweep"], "is a directory, not a file; give one of its YAML files, e.g. "),
    "sweep space not UTF-8": (["tune", "configs/cartpole.yaml", "--space", "{latin1_yaml}", "--out", "{tmp}/sweep"], "latin1.yaml is not UTF-8 (byte 0xe9 on line 2); save it as UTF-8"),
    "sweep uniform on an integer key": (["tune", "configs/cartpole.yaml", "--space", "{space_uniform_int}", "--out", "{tmp}/sweep"], "space_uniform_int.yaml: ppo.update_epochs: uniform draws fractional numbers and ppo.update_epochs takes whole numbers; use {randint: [2, 6]} (both ends included)"),
    "sweep randint over refused integers": (["tune", "configs/cartpole.yaml", "--space", "{space_randint_divisors}", "--out", "{tmp}/sweep"], "space_randint_divisors.yaml: ppo.num_minibatches=3 gives an invalid config: ppo.num_minibatches (3) must divide the 1024 samples of one iteration (rollout_steps x num_workers x envs_per_worker); randint [1, 8] draws every integer between: give the ones the config takes, {choice: [1, 2, 4, 8]}"),
    "sweep metric misspelled": (["tune", "configs/cartpole.yaml", "--space", "{space_lr}", "--metric", "charts/episodic_return", "--out", "{tmp}/sweep"], "--metric 'charts/episodic_return' is not a scalar the trials report; did you mean charts/episodic_return_min, charts/episodic_return_max or charts/episodic_return_mean?"),
    "sweep eval metric without eval": (["tune", "configs/cartpole.yaml", "--space", "{space_lr}", "--metric", "eval/return_mean", "--out", "{tmp}/sweep"], "--metric eval/return_mean is reported only with evaluation on; add --set eval.every=N (iterations)"),
    "sweep out is a file": (["tune", "configs/cartpole.yaml", "--space", "{space_lr}", "--out", "{space_lr}"], "space_lr.yaml is a file, not a directory; give a directory for the sweep's runs and results"),
    "sweep resume of nothing": (["tune", "configs/cartpole.yaml", "--space", "{space_lr}", "--out", "{tmp}/sweep", "--resume"], "sweep holds no sweep to resume (no trial state in tune/); start it without --resume"),
    "sweep pbt interval": (["tune", "configs/cartpole.yaml", "--space", "{space_lr}", "--scheduler", "pbt", "--perturbation-steps", "-3", "--out", "{tmp}/sweep"], "--perturbation-steps must be between 1 and the budget ppo.total_steps=100000, got -3"),
    "agent no pattern matches": (["train", "configs/cartpole.yaml", "--set", "env.id=tests.envs.agents:SpeakerListener", "--set", "policies={{a: {{}}, b: {{}}}}", "--set", "policy_mapping={{'speaker*': a, 'x*': b}}"], "agent 'listener_0' of env 'tests.envs.agents:SpeakerListener' matches no pattern of policy_mapping ('speaker*', 'x*'); add one, e.g. 'listener_0': a"),
    "policy no agent uses": (["train", "configs/cartpole.yaml", "--set", "env.id=tests.envs.agents:SpeakerListener", "--set", "policies={{a: {{}}, b: {{}}}}", "--set", "policy_mapping={{'*': a, 'zzz': b}}"], "policies.b: no agent of env 'tests.envs.agents:SpeakerListener' maps to it (its agents: speaker_0, listener_0); map some in policy_mapping or remove the policy"),
    "spaces differ under one policy": (["train", "configs/cartpole.yaml", "--set", "env.id=tests.envs.agents:SpeakerListener"], "agents 'speaker_0' and 'listener_0' of env 'tests.envs.agents:SpeakerListener' share policy 'shared' but have different observation spaces"),
    "policies on a gymnasium env": (["train", "configs/cartpole.yaml", "--set", "policies={{a: {{}}}}"], "policies, policy_mapping, self_play and eval.opponent are for PettingZoo (multi-agent) envs, and env 'CartPole-v1' is a gymnasium env"),
    "policy key typo": (["train", "configs/cartpole.yaml", "--set", "policies={{a: {{kindd: lstm}}}}"], "policies.a.kindd: unknown key"),
    "mapping to no policy": (["train", "configs/cartpole.yaml", "--set", "policies={{a: {{}}}}", "--set", "policy_mapping={{'*': b}}"], "policy_mapping['*']: no policy 'b' in `policies` (they are: a)"),
}  # fmt: skip


SPACES = {
    "space_bad_key": "ppo.lrr: {choice: [1.0e-3]}\n",
    "space_bad_sampler": "ppo.lr: {normal: [1.0e-3, 1.0e-4]}\n",
    "space_bad_value": "ppo.num_minibatches: {choice: [4, 7]}\n",
    "space_network": "policy.hidden_sizes: {choice: [[64, 64], [32, 32]]}\n",
    "space_uniform_int": "ppo.update_epochs: {uniform: [2, 6]}\n",
    "space_randint_divisors": "ppo.num_minibatches: {randint: [1, 8]}\n",
    "space_lr": "ppo.lr: {loguniform: [1.0e-4, 3.0e-3]}\n",
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gives_one_clear_error_and_changes_nothing(case, existing_run, bad_checkpoints, tmp_path):
    args, expected = CASES[case]
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("ppo: [unclosed\n")
    latin1_yaml = tmp_path / "latin1.yaml"
    latin1_yaml.write_bytes("# run config\nname: caf\u00e9\n".encode("latin-1"))
    values = {"tmp": tmp_path, "existing": existing_run, "bad_yaml": bad_yaml, "latin1_yaml": latin1_yaml}
    for name, text in SPACES.items():
        values[name] = tmp_path / f"{name}.yaml"
        values[name].write_text(text)
    values |= bad_checkpoints
    args = [arg.format(**values) for arg in args]
    if args[0] == "train" and "--resume" not in args:
        args = [*args[:2], *SMALL, *args[2:], "--run-dir", str(existing_run)]
    before = fingerprint(existing_run)
    result = cli(*args)
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert expected in result.stderr, result.stderr
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert fingerprint(existing_run) == before


@pytest.mark.parametrize(
    "env, message",
    [
        ("WrongResetShapeEnv", "raised ValueError: Output array is the wrong shape on reset"),
        ("RaisingConstructorEnv", "raised FileNotFoundError while being made: assets/level1.bin"),
    ],
)
def test_env_failing_outside_step_is_one_line_naming_the_env(tmp_path, env, message):
    start = time.monotonic()
    result = cli(
        "train",
        "configs/cartpole.yaml",
        "--run-dir",
        str(tmp_path / "run"),
        *SMALL,
        "--set",
        f"env.id=tests.envs.bad:{env}",
    )
    assert result.returncode == 2
    assert result.stderr == f"error: env 'tests.envs.bad:{env}' {message}\n"
    assert time.monotonic() - start < 60
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_nan_env_stops_the_run_naming_env_worker_and_step(tmp_path):
    result = cli(
        "train", "configs/cartpole.yaml", "--run-dir", str(tmp_path / "run"), *SMALL,
        "--set", "env.id=tests.envs.bad:NaNCartPole",
    )  # fmt: skip
    assert result.returncode == 2
    message = "env 'tests.envs.bad:NaNCartPole' returned a NaN or inf observation or reward (worker 0, env step"
    assert result.stderr.startswith(f"error: {message}") and result.stderr.count("\n") == 1, result.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()  # nothing trained on NaN was saved


def test_nan_env_with_reset_switch_trains_and_counts_failures(tmp_path):
    result = cli(
        "train", "configs/cartpole.yaml", "--run-dir", str(tmp_path / "run"), *SMALL,
        "--set", "env.id=tests.envs.bad:NaNCartPole", "--set", "env.on_error=reset", "--set", "ppo.total_steps=1024",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "run"))
    events.Reload()
    assert events.Scalars("workers/0/env_failures")[-1].value > 0
    assert all(e.value == e.value for e in events.Scalars("losses/value"))  # never NaN


def limit_file_size(max_bytes: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))

    return apply


def test_full_disk_while_checkpointing_keeps_the_previous_checkpoint(existing_run, tmp_path):
    run_dir = tmp_path / "run"
    import shutil

    shutil.copytree(existing_run, run_dir)
    previous = sorted((run_dir / "checkpoints").glob("iter_*.pt"))[-1]
    before = previous.read_bytes()
    result = cli(
        "train", "--resume", str(run_dir), "--set", "ppo.total_steps=2048", "--set", "logging.tensorboard=false",
        preexec_fn=limit_file_size(previous.stat().st_size // 2),
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "could not write checkpoint" in result.stderr and "File too large" in result.stderr
    assert "earlier checkpoints are intact" in result.stderr
    assert previous.read_bytes() == before
    assert load_checkpoint(run_dir)[0] == previous
    assert not [p for p in (run_dir / "checkpoints").iterdir() if p.name.endswith(".tmp")]


def test_full_disk_while_writing_tensorboard_events_stops_in_one_line(existing_run, tmp_path):
    run_dir = tmp_path / "run"
    import shutil

    shutil.copytree(existing_run, run_dir)
    before = fingerprint(run_dir / "checkpoints")
    result = cli(
        "train", "--resume", str(run_dir), "--set", "ppo.total_steps=1000000", "--set", "checkpoint.every=0",
        preexec_fn=limit_file_size(16_000),
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    newest = sorted((run_dir / "checkpoints").glob("iter_*.pt"))[-1]
    assert result.stderr == (
        f"error: could not write TensorBoard events in {run_dir}: File too large; free the disk (or set "
        f"logging.tensorboard: false); newest checkpoint {newest}; continue with: python -m trainer train "
        f"--resume {run_dir}\n"
    )
    assert fingerprint(run_dir / "checkpoints") == before


@pytest.mark.parametrize(
    "env, what",
    [("HugeRewardCartPole", "a reward of 1e+300"), ("HugeObservationEnv", "an observation value of -1e+300")],
)
def test_value_that_overflows_float32_stops_naming_env_worker_step_and_value(tmp_path, env, what):
    """Finite as the env's float64, inf as the rollout's float32: the env's error, not the learner's."""
    start = time.monotonic()
    result = cli(
        "train", "configs/cartpole.yaml", "--run-dir", str(tmp_path / "run"), *SMALL,
        "--set", f"env.id=tests.envs.bad:{env}",
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr == (
        f"error: env 'tests.envs.bad:{env}' returned {what}, which overflows float32 (worker 0, env step 8); "
        "scale it down in the env or with a wrapper in env.wrappers, or set env.on_error: reset to reset such envs "
        "instead\n"
    )
    assert time.monotonic() - start < 60
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_bad_env_id_fails_before_the_embedded_ray_starts(tmp_path):
    start = time.monotonic()
    result = cli("train", "configs/cartpole.yaml", "--run-dir", str(tmp_path / "run"), "--set", "env.id=CartPol-v1")
    assert result.returncode == 2 and "env.id 'CartPol-v1'" in result.stderr, result.stderr
    assert time.monotonic() - start < 8  # Ray alone takes ~10 s to start and stop here
    assert not (tmp_path / "run").exists()
