"""Observations beyond flat vectors, end to end: plugin envs by their plain ids in Ray workers
(Atari, MiniGrid, MinAtar) with their configs' wrappers, uint8 frames through the object store,
evaluate/export/resume on pixels, envs only the driver registered, env failures inside a worker
reported as the env's, observations that drift mid-run, and format-1 checkpoints."""

from __future__ import annotations

import math
import os
import pickle
import shutil
import subprocess
import sys

import gymnasium as gym
import pytest

import trainer
from tests.conftest import REPO_ROOT, make_small_config
from trainer.core import env_making
from trainer.core.config import EnvConfig, load_config
from trainer.core.errors import UserError
from trainer.evaluate import evaluate
from trainer.export import export_checkpoint
from trainer.inference import load_policy
from trainer.runtime.checkpoint import load_checkpoint

TINY = [
    "execution=ray",
    "workers.envs_per_worker=2",
    "ppo.rollout_steps=32",
    "ppo.sequence_length=8",
    "ppo.total_steps=256",
    "ppo.num_minibatches=2",
    "checkpoint.every=1",
    "logging.progress_interval_s=1000",
]


@pytest.mark.ray
@pytest.mark.parametrize(
    "config_file, stored",
    [
        ("atari_breakout.yaml", {"obs": ("image", "torch.uint8", [4, 84, 84])}),
        ("atari_breakout_lstm.yaml", {"obs": ("image", "torch.uint8", [84, 84])}),  # CNN + LSTM, one frame
        (
            "minigrid_doorkey.yaml",
            {"direction": ("discrete", "torch.int64", []), "image": ("image", "torch.uint8", [7, 7, 3])},
        ),
        ("minatar_breakout.yaml", {"obs": ("image", "torch.bool", [10, 10, 4])}),
    ],
)
def test_plugin_envs_train_by_plain_id_in_ray_workers(local_ray, tmp_path, config_file: str, stored: dict) -> None:
    config = load_config(REPO_ROOT / "configs" / config_file, TINY)
    summary = trainer.train(config, run_dir=tmp_path / "run")
    assert summary["iterations"] == 2 and summary["worker_restarts"] == 0
    _, state = load_checkpoint(tmp_path / "run")
    leaves = {d["key"]: (d["kind"], d["dtype"], d["shape"]) for d in state["spaces"]["observation"]}
    assert leaves == stored


@pytest.mark.ray
def test_atari_checkpoint_evaluates_exports_and_resumes(local_ray, tmp_path) -> None:
    """Whole games with raw scores from a pixel checkpoint, the same from its exported program
    (uint8 frames in, preprocessing folded in), and a resume that carries on the run."""
    config = load_config(REPO_ROOT / "configs/atari_breakout.yaml", TINY)
    run = tmp_path / "run"
    trainer.train(config, run_dir=run)
    from_checkpoint = evaluate(run, episodes=1, deterministic=True)
    program = export_checkpoint(run, tmp_path / "policy.pt2")
    from_program = evaluate(program, episodes=1)
    assert from_program["returns"] == from_checkpoint["returns"]
    assert from_checkpoint["mean_length"] > 100  # a whole game over all lives, in frames
    summary = trainer.train(resume=run, overrides=["ppo.total_steps=384"])
    assert summary["iterations"] == 3


def test_gymnasium_module_env_id_form_and_env_imports(tmp_path) -> None:
    base = {"execution": "inline", "ppo": {"total_steps": 128, "rollout_steps": 16}}
    for env in ({"id": "minigrid:MiniGrid-Empty-5x5-v0"}, {"id": "MiniGrid-Empty-5x5-v0", "imports": ["minigrid"]}):
        summary = trainer.train(make_small_config(**base, env=env), run_dir=tmp_path / env["id"].replace(":", "_"))
        assert summary["iterations"] == 2


@pytest.mark.ray
def test_env_only_the_driver_registered_reaches_the_workers(local_ray, tmp_path) -> None:
    """A script registers an env in its own process only: the workers get the registration."""
    env_id = "DriverOnlyPixels-v0"
    gym.register(env_id, entry_point="tests.envs.toy:PixelSideEnv", max_episode_steps=5)
    try:
        config = make_small_config(execution="ray", env={"id": env_id}, ppo={"total_steps": 256})  # 4 iterations
        summary = trainer.train(config, run_dir=tmp_path / "run")
    finally:
        del gym.registry[env_id]
    assert summary["worker_restarts"] == 0 and summary["env_steps"] > 0


@pytest.mark.ray
@pytest.mark.parametrize(
    "fail_on, message",
    [
        ("make", r"raised RuntimeError while being made: simulator licence not found"),
        ("reset", r"raised RuntimeError: simulator did not start on reset"),
    ],
)
def test_env_failing_inside_a_worker_is_the_envs_error_and_nothing_restarts(local_ray, tmp_path, fail_on, message):
    env = {"id": "tests.envs.bad:FailsInWorkerEnv", "kwargs": {"driver_pid": os.getpid(), "fail_on": fail_on}}
    config = make_small_config(execution="ray", env=env)
    with pytest.raises(UserError, match=rf"^env 'tests\.envs\.bad:FailsInWorkerEnv' {message}") as caught:
        trainer.train(config, run_dir=tmp_path / "run", address=None)
    assert "rollout worker" not in str(caught.value)


@pytest.mark.parametrize(
    "change, message",
    [
        ("drop", r"observation has no key 'b' any more"),
        ("shape", r"observation 'a' changed shape to \(3,\) \(expected \(2,\)\)"),
        ("dtype", r"observation 'img' changed dtype to float32 \(expected uint8\)"),
    ],
)
def test_observation_that_drifts_mid_run_stops_with_env_worker_and_step(tmp_path, change: str, message: str) -> None:
    env = {"id": "tests.envs.bad:DriftingObservationEnv", "kwargs": {"change": change, "at": 5}}
    with pytest.raises(
        UserError, match=rf"^env 'tests\.envs\.bad:DriftingObservationEnv': {message} \(worker 0, env step 8\)$"
    ):
        trainer.train(make_small_config(env=env), run_dir=tmp_path / "run")


@pytest.mark.parametrize("kind, returns", [("mlp", [68.0, 71.0, 26.0]), ("lstm", [57.0, 56.0, 29.0])])
def test_format_1_checkpoints_still_evaluate_the_same_and_resume(tmp_path, kind: str, returns: list[float]) -> None:
    """Checkpoints written before observations became a tree (tests/data, made by that trainer,
    with the returns it evaluated them at) load into the new layout unchanged."""
    source = REPO_ROOT / f"tests/data/v1_cartpole_{kind}.pt"
    policy = load_policy(source)
    assert _returns_as_format_1_evaluated(policy, episodes=3) == returns
    assert policy.network.preprocess.standardize["obs"].std.min() < 1  # stats came along
    run = tmp_path / "run" / "checkpoints"
    run.mkdir(parents=True)
    shutil.copy(source, run / "iter_0000004.pt")
    summary = trainer.train(resume=tmp_path / "run", overrides=["ppo.total_steps=384", "logging.tensorboard=false"])
    assert summary["iterations"] == 6


def _returns_as_format_1_evaluated(policy, episodes: int) -> list[float]:
    """That trainer's evaluation: episode k reset with seed 12345 + k, most likely actions."""
    env = gym.make("CartPole-v1")
    returns = []
    for k in range(episodes):
        obs, _ = env.reset(seed=12345 + k)
        state, total, done = None, 0.0, False
        while not done:
            action, state = policy.predict(obs, state)
            obs, reward, terminated, truncated, _ = env.step(action)
            total, done = total + reward, terminated or truncated
        returns.append(total)
    return returns


def test_dict_observation_checkpoint_exports_and_evaluates_the_same(tmp_path) -> None:
    """The exported program takes the dict of raw leaves (uint8 image, discrete cue) and acts as
    the checkpoint's deterministic policy does."""
    env = {"id": "tests.envs.toy:PixelSideEnv", "kwargs": {"cue": True}, "max_episode_steps": 10}
    trainer.train(make_small_config(env=env, policy={"kind": "lstm"}), run_dir=tmp_path / "run")
    program = export_checkpoint(tmp_path / "run", tmp_path / "policy.pt2")
    assert evaluate(program, episodes=5)["returns"] == evaluate(tmp_path / "run", 5, deterministic=True)["returns"]


def test_a_plugin_that_is_not_installed_names_its_extra(monkeypatch) -> None:
    plugin = env_making.Plugin("no_such_plugin_pkg", "fake", lambda module: None)
    monkeypatch.setitem(env_making.PLUGINS, "Fake/", plugin)
    with pytest.raises(UserError, match=r"^env.id 'Fake/Game-v0' needs no_such_plugin_pkg, which is not installed "
                       r"\(.*\): pip install 'ray-ppo-trainer\[fake\]'$"):  # fmt: skip
        env_making.make_env(EnvConfig(id="Fake/Game-v0"))


def test_plugins_register_once_per_process_even_after_the_drivers_spec(tmp_path) -> None:
    """A fresh worker process gets the driver's registration first and then builds its envs: no
    id is registered twice (gymnasium warns about each one it overrides; `-W error` fails on it)."""
    config = EnvConfig(id="MinAtar/Breakout-v1")
    env_making.register_plugins(config)
    (tmp_path / "spec.pkl").write_bytes(pickle.dumps(gym.registry[config.id]))
    code = (
        "import pickle, sys\n"
        "from trainer.core.config import EnvConfig\n"
        "from trainer.core.env_making import ensure_registered, make_env\n"
        "config = EnvConfig(id='MinAtar/Breakout-v1')\n"
        "ensure_registered(config, pickle.loads(open(sys.argv[1], 'rb').read()))\n"
        "for _ in range(2):\n"
        "    make_env(config).close()\n"
    )
    command = [sys.executable, "-W", "error", "-c", code, str(tmp_path / "spec.pkl")]
    proc = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_importing_the_env_modules_changes_nothing_until_an_env_is_made() -> None:
    """Importing registers no env id and sets no forkserver preload, process-wide: the trainer's
    own id is registered once when a config names it, in the driver and in the subprocesses of
    an async vector env; the preload, before the first of those starts."""
    code = (
        "import gymnasium as gym\n"
        "from multiprocessing.forkserver import _forkserver as server\n"
        "ids, preloaded = set(gym.registry), list(server._preload_modules)\n"
        "import trainer.core.env_making, trainer.core.envs\n"
        "print(sorted(set(gym.registry) - ids), server._preload_modules == preloaded)\n"
        "config = trainer.core.config.EnvConfig(id='MaskedVelocityCartPole-v1')\n"
        "trainer.core.env_making.make_env(config).close()\n"
        "envs = trainer.core.envs.make_vector_env(config, 2, mode='async')\n"
        "print(sorted(set(gym.registry) - ids), server._preload_modules, envs.reset(seed=1)[0].shape)\n"
        "envs.close()\n"
    )
    proc = subprocess.run([sys.executable, "-W", "error", "-c", code], cwd=REPO_ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines() == [
        "[] True",
        "['MaskedVelocityCartPole-v1'] ['__main__', 'trainer.core.env_making'] (2, 2)",
    ]


@pytest.mark.parametrize("env", ["HugeRewardCartPole", "HugeObservationEnv"])
def test_value_that_overflows_float32_is_reset_with_the_reset_switch(inline_runtime, env: str) -> None:
    """Step 5 of every episode gives 1e300 (float64): with `env.on_error: reset` that env is reset
    and its step stored as a zero-reward termination, so nothing non-finite reaches the learner."""
    config = make_small_config(env={"id": f"tests.envs.bad:{env}", "on_error": "reset"})
    runtime = inline_runtime(config)
    rollout = runtime.workers[0].collect(runtime.learner.snapshot())
    data = rollout.tensors
    assert rollout.timings["env_failures"] == 6  # t = 4, 9, 14 in each of 2 envs: episodes outlast 5 steps
    assert data["terminated"][[4, 9, 14]].all() and (data["reward"][[4, 9, 14]] == 0).all()
    assert data["first"][[5, 10, 15]].all()
    assert all(tensor.isfinite().all() for tensor in data.values() if tensor.is_floating_point())
    metrics = runtime.iterate().metrics
    assert all(math.isfinite(value) for value in metrics.values()), metrics
