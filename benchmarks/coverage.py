"""Environment coverage: on 20 representative gymnasium (and plugin) environments, does
`python -m trainer train` run a tiny training to the end, and does Stable-Baselines3's PPO?

It measures which observation and action spaces a new user can train on without writing code, not
how well anything learns: each env gets a 128-step budget. The trainer runs through its CLI in a
subprocess, exactly as a user would type it (this module never imports the trainer, so it keeps
working while the trainer's layout changes); SB3 runs in a subprocess as its docs show, on plain
`gymnasium.make(id)` with the policy SB3 needs for the space.

    python -m benchmarks.coverage [--json OUT] [--only ID ...]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
ENVS = [
    "CartPole-v1",
    "MountainCar-v0",
    "MountainCarContinuous-v0",
    "Acrobot-v1",
    "Pendulum-v1",
    "LunarLander-v3",
    "LunarLanderContinuous-v3",
    "BipedalWalker-v3",
    "CarRacing-v3",
    "Hopper-v5",
    "HalfCheetah-v5",
    "FrozenLake-v1",
    "Taxi-v4",  # gymnasium 1.4 deprecates Taxi-v3 (make raises DeprecatedEnv)
    "CliffWalking-v1",
    "Blackjack-v1",
    "ALE/Pong-v5",
    "ALE/Breakout-v5",
    "MiniGrid-DoorKey-5x5-v0",
    "MiniGrid-Empty-5x5-v0",
    "MinAtar/Breakout-v1",
]
OURS_OVERRIDES = [
    "execution=inline",
    "workers.num_workers=1",
    "workers.envs_per_worker=2",
    "ppo.rollout_steps=32",
    "ppo.num_minibatches=2",
    "ppo.update_epochs=1",
    "ppo.total_steps=128",
    "checkpoint.every=0",
    "logging.tensorboard=false",
]
RESULT_PREFIX = "COVERAGE_RESULT "
TIMEOUT_S = 300.0
CELL_CHARS = 140


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def run_ours(env_id: str, timeout_s: float) -> dict[str, Any]:
    """The trainer's CLI with a tiny budget; it trains when the exit code is 0."""
    with tempfile.TemporaryDirectory(prefix="coverage-") as tmp:
        cmd = [sys.executable, "-m", "trainer", "train", "configs/cartpole.yaml", "--set", f"env.id={env_id}"]
        cmd += [arg for item in OURS_OVERRIDES for arg in ("--set", item)] + ["--run-dir", str(Path(tmp) / "run")]
        start = time.perf_counter()
        try:
            proc = subprocess.run(
                cmd, cwd=ROOT, env=os.environ.copy(), capture_output=True, text=True, timeout=timeout_s
            )
        except subprocess.TimeoutExpired:
            return {
                "trains": False,
                "exit_code": None,
                "wall_s": round(timeout_s, 1),
                "error": f"timeout {timeout_s:g}s",
            }
        wall = round(time.perf_counter() - start, 1)
    error = None if proc.returncode == 0 else last_line(proc.stderr) or f"exit code {proc.returncode}"
    return {"trains": proc.returncode == 0, "exit_code": proc.returncode, "wall_s": wall, "error": error}


def run_sb3(env_id: str, timeout_s: float) -> dict[str, Any]:
    """This module's `--sb3-child` in a subprocess: the env's spaces and SB3 PPO's outcome."""
    cmd = [sys.executable, "-m", "benchmarks.coverage", "--sb3-child", env_id]
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=os.environ.copy(), capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"trains": False, "wall_s": round(timeout_s, 1), "error": f"timeout {timeout_s:g}s"}
    wall = round(time.perf_counter() - start, 1)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return {**json.loads(line[len(RESULT_PREFIX) :]), "wall_s": wall}
    error = last_line(proc.stderr) or f"exit code {proc.returncode}"
    return {"trains": False, "wall_s": wall, "error": f"crashed: {error}"}


def describe_space(space: Any) -> str:
    """str(space), shortened: long per-dimension Box bounds become [min..max], function reprs go."""
    from gymnasium import spaces

    if isinstance(space, spaces.Dict):
        return "Dict(" + ", ".join(f"{key}: {describe_space(sub)}" for key, sub in space.spaces.items()) + ")"
    if isinstance(space, spaces.Tuple):
        return "Tuple(" + ", ".join(describe_space(sub) for sub in space.spaces) + ")"
    if type(space).__name__ == "MissionSpace":
        return "MissionSpace"
    text = re.sub(r"\s+", " ", str(space))
    if isinstance(space, spaces.Box) and len(text) > 60:
        text = f"Box([{space.low.min():g}..{space.high.max():g}], {space.shape}, {space.dtype})"
    return re.sub(r"<[^>]*>", "...", text)


def sb3_child(env_id: str) -> None:
    """Register the plugins as their docs say, make the env, pick SB3's policy and learn 128 steps."""
    import gymnasium as gym

    result: dict[str, Any] = {"observation_space": None, "action_space": None}
    try:
        try:
            import ale_py

            gym.register_envs(ale_py)
        except ImportError:
            pass
        try:
            import minigrid  # noqa: F401 (registers the MiniGrid envs)
        except ImportError:
            pass
        try:
            import minatar.gym

            minatar.gym.register_envs()
        except ImportError:
            pass
        env = gym.make(env_id)
        result["observation_space"] = describe_space(env.observation_space)
        result["action_space"] = describe_space(env.action_space)
        env.close()

        from stable_baselines3 import PPO
        from stable_baselines3.common.env_util import make_vec_env
        from stable_baselines3.common.preprocessing import is_image_space

        if isinstance(env.observation_space, gym.spaces.Dict):
            policy = "MultiInputPolicy"
        elif is_image_space(env.observation_space):
            policy = "CnnPolicy"
        else:
            policy = "MlpPolicy"
        result["policy"] = policy
        PPO(policy, make_vec_env(env_id, n_envs=2), n_steps=32, batch_size=32, n_epochs=1).learn(128)
        result.update(trains=True, error=None)
    except Exception as exc:
        message = last_line(str(exc)) or "(no message)"
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        where = f"{Path(frame.filename).name}:{frame.lineno}"
        result.update(trains=False, error=f"{type(exc).__name__}: {message} ({where})")
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def cell(outcome: dict[str, Any]) -> str:
    if outcome["trains"]:
        return "trains"
    text = outcome["error"] or "failed"
    text = text if len(text) <= CELL_CHARS else text[: CELL_CHARS - 3] + "..."
    return text.replace("|", "\\|")


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| id | observation space | action space | ours | SB3 |", "|---|---|---|---|---|"]
    for row in rows:
        obs = (row["observation_space"] or "?").replace("|", "\\|")
        act = (row["action_space"] or "?").replace("|", "\\|")
        lines.append(f"| {row['id']} | {obs} | {act} | {cell(row['ours'])} | {cell(row['sb3'])} |")
    ours = sum(row["ours"]["trains"] for row in rows)
    sb3 = sum(row["sb3"]["trains"] for row in rows)
    lines += ["", f"ours {ours}/{len(rows)}, SB3 {sb3}/{len(rows)}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", metavar="OUT", help="also write the rows as JSON here")
    parser.add_argument("--only", nargs="+", metavar="ID", help="just these env ids")
    parser.add_argument("--timeout", type=float, default=TIMEOUT_S, help="seconds per env and side")
    parser.add_argument("--sb3-child", metavar="ID", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.sb3_child:
        sb3_child(args.sb3_child)
        return 0
    start = time.perf_counter()
    rows = []
    for env_id in args.only or ENVS:
        print(f"[coverage] {env_id}", file=sys.stderr, flush=True)
        sb3 = run_sb3(env_id, args.timeout)
        ours = run_ours(env_id, args.timeout)
        spaces = {key: sb3.pop(key, None) for key in ("observation_space", "action_space")}
        rows.append({"id": env_id, **spaces, "ours": ours, "sb3": sb3})
        print(
            f"[coverage]   ours: {cell(ours)} ({ours['wall_s']}s); SB3: {cell(sb3)} ({sb3['wall_s']}s)", file=sys.stderr
        )
    wall = round(time.perf_counter() - start, 1)
    print(markdown(rows))
    print(f"[coverage] {len(rows)} envs in {wall}s", file=sys.stderr)
    if args.json:
        totals = {"envs": len(rows), "ours": sum(r["ours"]["trains"] for r in rows)}
        totals["sb3"] = sum(r["sb3"]["trains"] for r in rows)
        Path(args.json).write_text(json.dumps({"rows": rows, "totals": totals, "wall_s": wall}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
