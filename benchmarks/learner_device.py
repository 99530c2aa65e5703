"""Time one PPO update on each available device for the same full buffer.

    python -m benchmarks.learner_device [--envs 64] [--steps 256] [--policy lstm] [--repeats 5]

Workers collect one real rollout per slot on the CPU (inline mode); the learner then runs the
same update (all epochs and minibatches) on each device; prints seconds per update and the ratio.
"""

from __future__ import annotations

import argparse
import json
import os

import torch

from trainer.core.config import load_config
from trainer.core.envs import probe_run
from trainer.learning.learner import Learner
from workers.rollout_worker import RolloutWorker


def time_update(config, rollouts, device: str, threads: int, repeats: int) -> float:
    probe = probe_run(config)
    overrides = [f"learner.device={device}", f"learner.torch_threads={threads}"]
    learner = Learner(load_config(config, overrides), probe)
    times = []
    for _ in range(repeats + 1):  # the first update warms up kernels and allocator
        learner.version = rollouts[0].version
        # The update's own phase (its end waits for the device): the rollouts' copy in is left out.
        times.append(learner.update(rollouts)["perf/learn_s"])
    return min(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", type=int, default=64)
    parser.add_argument("--steps", type=int, default=256)
    parser.add_argument("--policy", choices=["mlp", "lstm"], default="lstm")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cpu-threads", type=int, default=os.cpu_count() or 1, help="torch threads of the CPU learner")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    base = "configs/cartpole_masked_lstm.yaml" if args.policy == "lstm" else "configs/cartpole.yaml"
    config = load_config(
        base,
        [
            "execution=inline",
            "workers.num_workers=1",
            f"workers.envs_per_worker={args.envs}",
            f"ppo.rollout_steps={args.steps}",
        ],
    )
    probe = probe_run(config)
    worker = RolloutWorker(config, 0, probe)
    snapshot = Learner(config, probe).snapshot()
    rollouts = [worker.collect(snapshot)]
    seconds = {f"cpu_{args.cpu_threads}_threads": time_update(config, rollouts, "cpu", args.cpu_threads, args.repeats)}
    if torch.cuda.is_available():
        seconds["cuda"] = time_update(config, rollouts, "cuda", 1, args.repeats)
    samples = args.envs * args.steps
    result = {
        "policy": args.policy,
        "batch": f"{args.envs} envs x {args.steps} steps = {samples} samples",
        "epochs": config.ppo.update_epochs,
        "minibatches": config.ppo.num_minibatches,
        "update_s": seconds,
        "cuda_device": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }
    if "cuda" in seconds:
        result["cpu_over_cuda"] = seconds[f"cpu_{args.cpu_threads}_threads"] / seconds["cuda"]
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
