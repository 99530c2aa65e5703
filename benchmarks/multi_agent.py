"""Multi-agent runs: agent steps/s against RLlib, tic-tac-toe by self-play, a cooperative pair.

    python -m benchmarks.multi_agent throughput [--envs spread,speaker_listener] [--pairs 3] [--iterations 10]
        [--json out.json]
    python -m benchmarks.multi_agent learning [--steps N] [--games 500] [--json out.json]

- throughput, on two MPE envs (mpe2, discrete actions, 25-step episodes): simple_spread (3 agents,
  one policy shared by them) and simple_speaker_listener (2 agents with different spaces, a policy
  each). On Ray: this trainer and RLlib's multi-agent PPO (the new API stack,
  ParallelPettingZooEnv; RLlib ships in the same ray wheel) with the same 2 env runners x 8 envs,
  2048 env steps an iteration, 4 epochs of 4 minibatches per policy, [64, 64] tanh networks and
  one torch thread. Each side runs `--iterations` iterations in a fresh process; agent steps over
  training wall time (ours: summary.json's, from the first iteration to the last; RLlib's: from
  its first train() call to its last, its actors already started). The sides alternate, A B A B,
  `--pairs` times for each env; medians and every pair printed.
- Tic-tac-toe (configs/tictactoe_selfplay.yaml, inline): the policy trains against its pool of
  past snapshots; then its most likely moves play `--games` games against a uniformly random
  legal player as first player (player_1) and as many as second, and the same policy's exact
  probabilities over every game the random player can make. Reported: won, drew, lost and
  win-or-draw in each seat (the target: win-or-draw >= 0.95 in both), and the win rate against the
  pool at a few points of training (TensorBoard's selfplay/win_rate).
- The speaker-listener pair of tests/envs/agents.py (separate policies, speaker MLP, listener
  LSTM): the listener is right when it picks the target the speaker saw a step before. Reported:
  the success rate (return / episode length) of the last evaluation against chance (1/3).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.report import fmt, table, write_json
from benchmarks.rows import REPO_ROOT

PAIR_LENGTH = 20
WORKERS, ENVS, ROLLOUT = 2, 8, 128
MPE = {"max_cycles": 25, "continuous_actions": False}


@dataclass(frozen=True)
class Scenario:
    module: str  # mpe2's
    kwargs: dict
    agents: int
    mapping: dict[str, str]  # agent pattern -> policy

    @property
    def env(self) -> dict:
        return {"id": f"mpe2.{self.module}:parallel_env", "kwargs": self.kwargs}

    def policy_of(self, agent: str) -> str:
        return next(policy for pattern, policy in self.mapping.items() if fnmatch.fnmatch(agent, pattern))


SCENARIOS = {
    "spread": Scenario("simple_spread_v3", {"N": 3} | MPE, 3, {"*": "shared"}),
    "speaker_listener": Scenario(
        "simple_speaker_listener_v4", MPE, 2, {"speaker*": "speaker", "listener*": "listener"}
    ),
}


def ours_throughput(name: str, iterations: int) -> float:
    """Agent steps/s of this trainer, in a process of its own (its embedded Ray)."""
    scenario = SCENARIOS[name]
    with tempfile.TemporaryDirectory() as scratch:
        config = {
            "env": scenario.env,
            "policy": {"hidden_sizes": [64, 64]},
            "ppo": {"total_steps": iterations * WORKERS * ENVS * ROLLOUT, "rollout_steps": ROLLOUT},
            "workers": {"num_workers": WORKERS, "envs_per_worker": ENVS},
            "checkpoint": {"every": 0},
        }
        if len(set(scenario.mapping.values())) > 1:
            config |= {"policies": {p: {} for p in scenario.mapping.values()}, "policy_mapping": scenario.mapping}
        path = Path(scratch) / "config.yaml"
        path.write_text(json.dumps(config))
        run = Path(scratch) / "run"
        subprocess.run([sys.executable, "-m", "trainer", "train", str(path), "--run-dir", str(run)], check=True,
                       cwd=REPO_ROOT, capture_output=True)  # fmt: skip
        summary = json.loads((run / "summary.json").read_text())
    return summary["steps_per_s"] * scenario.agents


def rllib_throughput(name: str, iterations: int) -> float:
    """Agent steps/s of RLlib's PPO, in a process of its own."""
    command = [sys.executable, "-m", "benchmarks.multi_agent", "rllib", "--envs", name, "--iterations", str(iterations)]
    done = subprocess.run(command, check=True, cwd=REPO_ROOT, capture_output=True, text=True)
    line = next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))["agent_steps_per_s"]


def rllib_run(name: str, iterations: int) -> None:
    """RLlib's side (run as its own process): prints `RESULT {json}`."""
    import importlib

    import ray
    import torch
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.env.wrappers.pettingzoo_env import ParallelPettingZooEnv
    from ray.tune.registry import register_env

    scenario = SCENARIOS[name]

    def make(_):
        return ParallelPettingZooEnv(importlib.import_module(f"mpe2.{scenario.module}").parallel_env(**scenario.kwargs))

    torch.set_num_threads(1)
    ray.init(include_dashboard=False, logging_level="ERROR")
    register_env(name, make)
    batch = WORKERS * ENVS * ROLLOUT
    policies = set(scenario.mapping.values())
    per_policy = batch * scenario.agents // len(policies)  # agent steps each policy trains on
    config = (
        PPOConfig()
        .environment(name)
        .env_runners(num_env_runners=WORKERS, num_envs_per_env_runner=ENVS, rollout_fragment_length=ROLLOUT)
        .multi_agent(policies=policies, policy_mapping_fn=lambda agent, episode, **kwargs: scenario.policy_of(agent))
        .rl_module(model_config={"fcnet_hiddens": [64, 64], "fcnet_activation": "tanh"})
        .training(train_batch_size_per_learner=batch, minibatch_size=per_policy // 4, num_epochs=4, lr=2.5e-4)
    )
    algo = config.build_algo()
    start = time.perf_counter()
    for _ in range(iterations):
        result = algo.train()
    wall = time.perf_counter() - start
    agent_steps = sum(result["env_runners"]["num_agent_steps_sampled_lifetime"].values())
    print("RESULT " + json.dumps({"agent_steps_per_s": agent_steps / wall, "agent_steps": agent_steps}))
    algo.stop()


def tictactoe(steps: int, games: int, run_dir: Path) -> dict:
    import trainer
    from trainer.agent_evaluation import evaluate_agents

    overrides = ["execution=inline", "eval.every=0"] + ([f"ppo.total_steps={steps}"] if steps else [])
    summary = trainer.train(REPO_ROOT / "configs/tictactoe_selfplay.yaml", overrides, run_dir=run_dir)
    result = evaluate_agents(run_dir, 2 * games, True, 0, "random")
    seats = {}
    for seat in ("player_1", "player_2"):
        rates = {name: result[f"as_{seat}/{name}_rate"] for name in ("win", "draw", "loss")}
        seats[seat] = rates | {"win_or_draw": rates["win"] + rates["draw"]}
    return {"steps": summary["env_steps"], "steps_per_s": summary["steps_per_s"], "seats": seats,
            "exact": exact_against_random(run_dir), "pool_win_rate": _curve(run_dir, "selfplay/win_rate")}  # fmt: skip


def exact_against_random(target: Path | str) -> dict[str, dict[str, float]]:
    """Per seat, the probabilities that a tic-tac-toe policy's most likely moves win, draw and
    lose against a uniformly random legal player: every game the random player can make, each
    weighted by its probability, the real env replayed from its reset for each position (no
    sampling noise: 500 sampled games measure a 5% loss rate +-2%)."""
    import numpy as np
    from pettingzoo.classic import tictactoe_v3

    from trainer.inference import load_policy

    policy = load_policy(target, policy="shared")
    env = tictactoe_v3.env()

    def outcome(seat: str, moves: tuple[int, ...]) -> np.ndarray:
        env.reset(seed=0)
        for move in moves:
            env.step(move)
        obs, _, terminated, truncated, _ = env.last()
        if terminated or truncated:
            return np.eye(3)[int(np.sign(-env.rewards[seat])) + 1]  # won, drew, lost
        if env.agent_selection == seat:
            move = int(np.asarray(policy.predict(obs, deterministic=True)).reshape(-1)[0])
            return outcome(seat, (*moves, move))
        return np.mean([outcome(seat, (*moves, int(a))) for a in np.flatnonzero(obs["action_mask"])], axis=0)

    seats = {}
    for seat in ("player_1", "player_2"):
        won, drew, lost = (float(p) for p in outcome(seat, ()))
        seats[seat] = {"win": won, "draw": drew, "loss": lost, "win_or_draw": won + drew}
    return seats


def pair(steps: int, run_dir: Path) -> dict:
    import trainer

    config = {
        "execution": "inline",
        "env": {"id": "tests.envs.agents:SpeakerListener", "kwargs": {"length": PAIR_LENGTH}},
        "policies": {"speaker": {}, "listener": {"kind": "lstm", "lstm_hidden_size": 32}},
        "policy_mapping": {"speaker*": "speaker", "listener*": "listener"},
        "ppo": {"total_steps": steps, "rollout_steps": 32, "sequence_length": 8, "lr": 1e-3, "update_epochs": 8},
        "eval": {"every": 10, "episodes": 50},
    }
    summary = trainer.train(config, run_dir=run_dir)
    curve = _curve(run_dir, "eval/return_mean")
    return {"steps": summary["env_steps"], "success": [(step, value / PAIR_LENGTH) for step, value in curve]}


def _curve(run_dir: Path, tag: str, points: int = 5) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    values = [(event.step, round(event.value, 3)) for event in events.Scalars(tag)]
    return values[:: max(1, len(values) // points)] + values[-1:]


def throughput(names: list[str], pairs: int, iterations: int) -> dict:
    results = {}
    for name in names:
        runs = {"ours": [], "rllib": []}
        for _ in range(pairs):
            runs["ours"].append(round(ours_throughput(name, iterations)))
            runs["rllib"].append(round(rllib_throughput(name, iterations)))
            print(f"{name} pair: ours {runs['ours'][-1]:,} agent steps/s, RLlib {runs['rllib'][-1]:,}", flush=True)
        medians = {side: statistics.median(values) for side, values in runs.items()}
        results[name] = {"runs": runs, "medians": medians}
    rows = [
        [name, side, fmt(result["medians"][side]), ", ".join(f"{v:,}" for v in result["runs"][side])]
        for name, result in results.items()
        for side in ("ours", "rllib")
    ]
    print(table(f"agent steps/s, {WORKERS} workers x {ENVS} envs", ["env", "trainer", "median", "every run"], rows))
    for name, result in results.items():
        print(f"{name}: ours / RLlib {result['medians']['ours'] / result['medians']['rllib']:.2f}")
    return results


def learning(args) -> dict:
    with tempfile.TemporaryDirectory() as scratch:
        results = {
            "tictactoe": tictactoe(args.steps, args.games, Path(scratch) / "tictactoe"),
            "pair": pair(args.pair_steps, Path(scratch) / "pair"),
        }
    seats = results["tictactoe"]["seats"]
    rows = [
        [seat, *(fmt(rates[k], ".3f") for k in ("win", "draw", "loss", "win_or_draw"))] for seat, rates in seats.items()
    ]
    print(table(f"tic-tac-toe after {results['tictactoe']['steps']:,} steps, {args.games} games a seat against a "
                "random legal player", ["seat", "won", "drew", "lost", "won or drew"], rows))  # fmt: skip
    exact = results["tictactoe"]["exact"]
    rows = [
        [seat, *(fmt(rates[k], ".3f") for k in ("win", "draw", "loss", "win_or_draw"))] for seat, rates in exact.items()
    ]
    print(table("the same policy, exact probabilities over every game a random legal player can make",
                ["seat", "won", "drew", "lost", "won or drew"], rows))  # fmt: skip
    print("win rate against the pool:", results["tictactoe"]["pool_win_rate"])
    print("speaker-listener success (chance 0.333):", results["pair"]["success"])
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("throughput", "learning", "rllib"))
    parser.add_argument("--envs", default=",".join(SCENARIOS), help="throughput: which envs, comma-separated")
    parser.add_argument("--pairs", type=int, default=3, help="throughput: A B pairs")
    parser.add_argument("--iterations", type=int, default=10, help="throughput: iterations of each run")
    parser.add_argument("--steps", type=int, help="learning: tic-tac-toe env steps (default: the config's)")
    parser.add_argument("--pair-steps", type=int, default=300_000, help="learning: speaker-listener env steps")
    parser.add_argument("--games", type=int, default=500, help="learning: games in each seat against random")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    names = args.envs.split(",")
    if unknown := set(names) - set(SCENARIOS):
        parser.error(f"--envs: no env {', '.join(sorted(unknown))} (they are: {', '.join(SCENARIOS)})")
    if args.mode == "rllib":
        rllib_run(names[0], args.iterations)
        return
    results = throughput(names, args.pairs, args.iterations) if args.mode == "throughput" else learning(args)
    if args.json:
        write_json(args.json, results)


if __name__ == "__main__":
    main()
