"""Stable-Baselines3 peers, each run in a fresh process by benchmarks.benchmark.

    python -m benchmarks.peers throughput '[{"policy": "mlp", "envs": 64, ...}, ...]'
    python -m benchmarks.peers solve --seed 1 [--max-steps 100000]

`throughput`: PPO (MLP, CartPole-v1) or sb3-contrib RecurrentPPO (LSTM, MaskedVelocityCartPole-v1)
on a DummyVecEnv of the same env count and the same rollout / minibatch / epoch sizes as our rows;
steps/s from the start of rollout `warmup` to the end of learn(). `solve`: PPO on CartPole-v1 with
RL-Zoo's tuned hyperparameters; prints `SOLVED <step>` the moment the mean return of the last 20
episodes reaches 475 and stops training there. Both end with one line `RESULT {json}`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import deque

RESULT_PREFIX = "RESULT "
SOLVED_PREFIX = "SOLVED "


def available() -> dict[str, str | None]:
    """Which peer libraries import; a missing one maps to the reason."""
    import importlib.util

    missing = {}
    for module, package in (("stable_baselines3", "stable-baselines3"), ("sb3_contrib", "sb3-contrib")):
        missing[module] = None if importlib.util.find_spec(module) else f"{package} not installed"
    return missing


def _rollout_timer():
    from stable_baselines3.common.callbacks import BaseCallback

    class RolloutTimer(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.starts: list[tuple[float, int]] = []

        def _on_rollout_start(self) -> None:
            self.starts.append((time.perf_counter(), self.num_timesteps))

        def _on_step(self) -> bool:
            return True

    return RolloutTimer()


def throughput(spec: dict) -> dict:
    """spec: policy (mlp|lstm|atari), envs, rollout_steps, num_minibatches, update_epochs, warmup,
    iterations; for atari also env_id (a NoFrameskip-v4 id); optional torch_threads."""
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv

    from trainer.core.env_making import register_own_env

    register_own_env("MaskedVelocityCartPole-v1")

    if "torch_threads" in spec:  # as many as our learner gets, where the row says so
        torch.set_num_threads(spec["torch_threads"])
    n, T = spec["envs"], spec["rollout_steps"]
    common = dict(
        n_steps=T,
        batch_size=n * T // spec["num_minibatches"],
        n_epochs=spec["update_epochs"],
        learning_rate=1e-3,
        verbose=0,
        device="cpu",
        seed=1,
    )
    if spec["policy"] == "lstm":
        from sb3_contrib import RecurrentPPO

        env = make_vec_env("MaskedVelocityCartPole-v1", n_envs=n, vec_env_cls=DummyVecEnv, seed=1)
        # Closest to ours: one LSTM (64) shared by actor and critic, one 64-unit layer.
        kwargs = dict(lstm_hidden_size=64, shared_lstm=True, enable_critic_lstm=False, net_arch=[64])
        model = RecurrentPPO("MlpLstmPolicy", env, policy_kwargs=kwargs, **common)
        setup = "RecurrentPPO MlpLstmPolicy (shared LSTM 64, net_arch [64])"
    elif spec["policy"] == "atari":
        import ale_py
        import gymnasium as gym
        from stable_baselines3.common.env_util import make_atari_env
        from stable_baselines3.common.vec_env import VecFrameStack

        gym.register_envs(ale_py)
        # SB3's own Atari pipeline: noop 30, frame skip 4 with max-pool, episodic life, fire
        # reset, 84x84 gray, reward clipping; 4 stacked frames.
        env = VecFrameStack(make_atari_env(spec["env_id"], n_envs=n, seed=1, vec_env_cls=DummyVecEnv), 4)
        model = PPO("CnnPolicy", env, **common)
        setup = f"PPO CnnPolicy (Nature CNN) on {spec['env_id']}"
    else:
        env = make_vec_env("CartPole-v1", n_envs=n, vec_env_cls=DummyVecEnv, seed=1)
        model = PPO("MlpPolicy", env, **common)
        setup = "PPO MlpPolicy ([64, 64] tanh)"
    timer = _rollout_timer()
    total = (spec["warmup"] + spec["iterations"]) * n * T
    _without_log_folder(model)
    model.learn(total_timesteps=total, callback=timer)
    end = time.perf_counter()
    start, start_step = timer.starts[spec["warmup"]]
    steps = model.num_timesteps - start_step
    env.close()
    return {
        "setup": f"{setup}, DummyVecEnv x{n}, n_steps {T}, {spec['update_epochs']} epochs",
        "env_steps": steps,
        "wall_s": end - start,
        "steps_per_s": steps / (end - start),
        "torch_threads": torch.get_num_threads(),
    }


def _without_log_folder(model) -> None:
    """A logger that writes nothing: SB3's default makes an empty SB3-<date> folder in /tmp per run."""
    from stable_baselines3.common.logger import Logger

    model.set_logger(Logger(folder=None, output_formats=[]))


def solve(seed: int, max_steps: int) -> dict:
    """RL-Zoo's CartPole-v1 PPO (n_envs 8, n_steps 32, batch 256, gae 0.8, gamma 0.98, 20 epochs,
    ent 0, lr and clip linear from 1e-3 and 0.2); stops when the last-20 mean reaches 475."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env

    class StopAtSolve(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.returns: deque[float] = deque(maxlen=20)
            self.solved_at: int | None = None
            self.episodes = 0

        def _on_step(self) -> bool:
            for info in self.locals["infos"]:
                if "episode" in info:
                    self.returns.append(float(info["episode"]["r"]))
                    self.episodes += 1
            if len(self.returns) == 20 and sum(self.returns) / 20 >= 475:
                self.solved_at = self.num_timesteps
                print(f"{SOLVED_PREFIX}{self.num_timesteps}", flush=True)
                return False
            return True

    start = time.perf_counter()
    env = make_vec_env("CartPole-v1", n_envs=8, seed=seed)
    model = PPO(
        "MlpPolicy",
        env,
        n_steps=32,
        batch_size=256,
        gae_lambda=0.8,
        gamma=0.98,
        n_epochs=20,
        ent_coef=0.0,
        learning_rate=lambda progress: progress * 1e-3,
        clip_range=lambda progress: progress * 0.2,
        seed=seed,
        device="cpu",
        verbose=0,
    )
    callback = StopAtSolve()
    _without_log_folder(model)
    learn_start = time.perf_counter()
    model.learn(total_timesteps=max_steps, callback=callback)
    end = time.perf_counter()
    env.close()
    return {
        "solved_at_step": callback.solved_at,
        "env_steps": model.num_timesteps,
        "episodes": callback.episodes,
        "learn_wall_s": end - learn_start,
        "in_process_wall_s": end - start,
        "steps_per_s": model.num_timesteps / (end - learn_start),
    }


def main(argv: list[str] | None = None) -> int:
    import torch

    # One intra-op thread, as each of our worker and learner processes uses (torch_threads: 1);
    # with more, OpenMP's spinning threads collapse under any other load on a 2-core machine.
    torch.set_num_threads(1)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    tp = commands.add_parser("throughput")
    tp.add_argument("specs", help="JSON list of specs")
    sv = commands.add_parser("solve")
    sv.add_argument("--seed", type=int, default=1)
    sv.add_argument("--max-steps", type=int, default=100_000)
    args = parser.parse_args(argv)
    if args.command == "throughput":
        result = [throughput(spec) for spec in json.loads(args.specs)]
    else:
        result = solve(args.seed, args.max_steps)
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
