"""What action masks buy and cost, against sb3-contrib's MaskablePPO.

    python -m benchmarks.masking [--seeds 3] [--json out.json]

- Taxi-v4 with its info masks (configs/taxi_masked.yaml: 2 Ray workers x 8 envs, 128 steps):
  this trainer with masks and without (`env.action_mask: off`), and MaskablePPO with the same 16
  envs (DummyVecEnv), rollout, minibatch, epochs, learning rate, entropy and network. Per seed:
  the env steps until the mean return of the last 20 episodes reaches 8 (Taxi's threshold), and
  the env steps per second of training wall time over that run (the whole budget where it never
  gets there). Medians over the seeds, every seed printed.
- A masked env with a Dict observation (tests/envs/masked.py: the mask under `action_mask`,
  which MaskablePPO reads through sb3-contrib's ActionMasker and also feeds its network): steps
  to a return of 8 of 20.
- A masked task that needs memory (the cue shown every 4th step, the mask redrawn every step):
  this trainer's LSTM with masks against its MLP with masks, the learning curve (MaskablePPO has
  no recurrent policy).
- Rollout bytes per iteration with and without the mask leaf.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections import deque
from pathlib import Path

from benchmarks.report import fmt, table, write_json
from benchmarks.rows import REPO_ROOT

TAXI_THRESHOLD, CHOICE_THRESHOLD = 8.0, 8.0
CHOICE = "tests.envs.masked:MaskedChoice"
CHOICE_ENV = {"source": "observation", "strict": False, "good_always_legal": False}
MEMORY_ENV = {"source": "info", "strict": False, "good_always_legal": False, "cue_every": 4}


def ours(config, overrides: list[str], threshold: float | None, run_dir: Path, curve: list | None = None) -> dict:
    import trainer

    def watch(report) -> bool:
        mean = report.scalars.get("charts/mean_return_last20")
        if curve is not None and mean is not None:
            curve.append((report.env_steps, round(mean, 2)))
        return threshold is not None and mean is not None and mean >= threshold

    summary = trainer.train(config, overrides=overrides, run_dir=run_dir, callbacks=[watch])
    solved = threshold is not None and summary["mean_return_last20"] >= threshold
    return {"steps": summary["env_steps"], "solved_at": summary["env_steps"] if solved else None,
            "steps_per_s": summary["steps_per_s"], "final": summary["mean_return_last20"]}  # fmt: skip


def maskable(env_id: str, kwargs: dict, seed: int, budget: int, threshold: float, dict_obs: bool) -> dict:
    """MaskablePPO as close to configs/taxi_masked.yaml as it goes: 16 envs, n_steps 128, 4
    minibatches, 4 epochs, lr 1e-3 (annealed off), entropy 0.01, [64, 64] tanh, one torch thread."""
    import gymnasium as gym
    import torch
    from sb3_contrib import MaskablePPO
    from sb3_contrib.common.wrappers import ActionMasker
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.logger import Logger
    from stable_baselines3.common.vec_env import DummyVecEnv

    from trainer.core.config import EnvConfig
    from trainer.core.env_making import make_env

    torch.set_num_threads(1)

    def one(index: int):
        def make():
            env = make_env(EnvConfig(id=env_id, kwargs=kwargs))
            if dict_obs:
                return ActionMasker(env, lambda e: e.unwrapped._mask_given().astype(bool))
            holder = {}

            class KeepInfoMask(gym.Wrapper):
                def reset(self, **kw):
                    obs, info = self.env.reset(**kw)
                    holder["mask"] = info["action_mask"]
                    return obs, info

                def step(self, action):
                    out = self.env.step(action)
                    holder["mask"] = out[4]["action_mask"]
                    return out

            return ActionMasker(KeepInfoMask(env), lambda e: holder["mask"].astype(bool))

        return make

    class StopAtThreshold(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.returns: deque[float] = deque(maxlen=20)
            self.solved_at: int | None = None

        def _on_step(self) -> bool:
            for info in self.locals["infos"]:
                if "episode" in info:
                    self.returns.append(info["episode"]["r"])
            if len(self.returns) == 20 and statistics.mean(self.returns) >= threshold:
                self.solved_at = self.num_timesteps
                return False
            return True

    env = DummyVecEnv([one(i) for i in range(16)])
    env.seed(seed)
    model = MaskablePPO(
        "MultiInputPolicy" if dict_obs else "MlpPolicy", env, n_steps=128, batch_size=512, n_epochs=4,
        learning_rate=1e-3, ent_coef=0.01, policy_kwargs={"net_arch": [64, 64]}, seed=seed, device="cpu", verbose=0,
    )  # fmt: skip
    model.set_logger(Logger(folder=None, output_formats=[]))
    stop = StopAtThreshold()
    start = time.perf_counter()
    model.learn(total_timesteps=budget, callback=stop)
    wall = time.perf_counter() - start
    env.close()
    final = statistics.mean(stop.returns) if stop.returns else float("nan")
    return {"steps": model.num_timesteps, "solved_at": stop.solved_at, "steps_per_s": model.num_timesteps / wall,
            "final": final}  # fmt: skip


def rollout_bytes() -> dict[str, int]:
    from trainer.core.config import load_config
    from trainer.core.envs import probe_run

    sizes = {}
    for mask in ("auto", "off"):
        config = load_config(REPO_ROOT / "configs/taxi_masked.yaml", [f"env.action_mask={mask}"])
        probe = probe_run(config)
        sizes[mask] = probe.rollout_spec.nbytes(config.workers.envs_per_worker) * config.workers.num_workers
    return sizes


def choice_config(kind: str, env: dict, total: int, gamma: float = 0.99) -> dict:
    return {
        "env": {"id": CHOICE, "kwargs": env},
        "policy": {"kind": kind, "hidden_sizes": [32], "lstm_hidden_size": 32},
        "ppo": {"total_steps": total, "rollout_steps": 32, "sequence_length": 16, "lr": 3e-3 if kind == "mlp" else 1e-3,
                "num_minibatches": 4, "update_epochs": 4, "ent_coef": 0.0 if kind == "mlp" else 0.01, "gamma": gamma},
        "workers": {"num_workers": 2, "envs_per_worker": 8},
        "checkpoint": {"every": 0},
        "logging": {"tensorboard": False},
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--taxi-budget", type=int, default=300_000)
    parser.add_argument("--memory-steps", type=int, default=60_000)
    parser.add_argument("--json", help="write the results here too")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO_ROOT))
    taxi = str(REPO_ROOT / "configs/taxi_masked.yaml")
    results: dict = {"taxi": {}, "dict": {}, "memory": {}}
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        for seed in range(1, args.seeds + 1):  # the sides alternate within each seed
            budget = [f"seed={seed}", f"ppo.total_steps={args.taxi_budget}", "checkpoint.every=0"]
            results["taxi"].setdefault("ours, masks", []).append(
                ours(taxi, budget, TAXI_THRESHOLD, root / f"taxi{seed}")
            )
            results["taxi"].setdefault("MaskablePPO", []).append(
                maskable("Taxi-v4", {}, seed, args.taxi_budget, TAXI_THRESHOLD, dict_obs=False)
            )
            results["taxi"].setdefault("ours, no masks", []).append(
                ours(taxi, [*budget, "env.action_mask=off"], TAXI_THRESHOLD, root / f"taxi_off{seed}")
            )
            dict_config = choice_config("mlp", CHOICE_ENV, 30_000)
            results["dict"].setdefault("ours, masks", []).append(
                ours(dict_config, [f"seed={seed}"], CHOICE_THRESHOLD, root / f"dict{seed}")
            )
            results["dict"].setdefault("MaskablePPO", []).append(
                maskable(CHOICE, CHOICE_ENV, seed, 30_000, CHOICE_THRESHOLD, dict_obs=True)
            )
            for log in (results["taxi"], results["dict"]):
                print({name: runs[-1] for name, runs in log.items()}, flush=True)
        for kind in ("lstm", "mlp"):
            curve: list = []
            config = choice_config(kind, MEMORY_ENV, args.memory_steps, gamma=0.9)
            results["memory"][f"ours, {kind} + masks"] = {**ours(config, [], None, root / f"mem_{kind}", curve),
                                                          "curve": curve}  # fmt: skip
    results["rollout_bytes"] = rollout_bytes()
    print(render(results))
    if args.json:
        write_json(Path(args.json), results)
    return 0


def render(results: dict) -> str:
    lines = []
    for task, title in (("taxi", "Taxi-v4, 16 envs"), ("dict", "Masked choice, Dict observation, 16 envs")):
        rows = []
        for name, runs in results[task].items():
            solved = [r["solved_at"] for r in runs]
            median = statistics.median(s if s is not None else float("inf") for s in solved)
            rows.append([
                name, ", ".join(fmt(s) if s is not None else f">{fmt(r['steps'])}" for s, r in zip(solved, runs)),
                fmt(median) if median != float("inf") else "never",
                ", ".join(fmt(r["steps_per_s"]) for r in runs), fmt(statistics.median(r["steps_per_s"] for r in runs)),
            ])  # fmt: skip
        headers = ["", "steps to 8, per seed", "median", "steps/s per seed", "median steps/s"]
        lines.append(table(title, headers, rows))
    for name, run in results["memory"].items():
        points = ", ".join(
            f"{steps // 1000}k: {value:g}" for steps, value in run["curve"][:: max(1, len(run["curve"]) // 8)]
        )
        lines.append(f"memory task, {name}: {points}; final {run['final']:.2f}")
    sizes = results["rollout_bytes"]
    lines.append(f"Taxi rollout bytes per iteration: {sizes['auto']:,} with masks, {sizes['off']:,} without")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
