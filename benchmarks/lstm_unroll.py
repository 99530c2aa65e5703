"""Time the LSTM training unroll (forward + backward) of sequences with episode starts inside, three
ways on each device: one call per stretch between starts (split), or the pieces cut at the starts
in one packed call, or in one padded call. `features()` picks per device and number of starts.

    python -m benchmarks.lstm_unroll [--steps 16] [--batch 1024] [--reset-prob 0.025]
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from gymnasium import spaces

from trainer.core.config import Config, PolicyConfig
from trainer.core.policy import LSTMActorCritic, build_policy
from trainer.core.spec import ObsSpec

UNROLLS = {
    "split": lambda policy, x, h, c, first: policy._unroll_split(x, h, c, first),
    "packed": lambda policy, x, h, c, first: policy._unroll_pieces(x, h, c, first, packed=True),
    "padded": lambda policy, x, h, c, first: policy._unroll_pieces(x, h, c, first, packed=False),
}


def time_unroll(policy: LSTMActorCritic, method: str, x, h, c, first, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats + 1):
        if x.is_cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        out, _ = UNROLLS[method](policy, x, h, c, first)
        out.sum().backward()
        if x.is_cuda:
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--reset-prob", type=float, default=0.025, help="chance that a step starts an episode")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    torch.manual_seed(0)
    results = {}
    for device in ["cpu"] + (["cuda"] if torch.cuda.is_available() else []):
        config = Config(policy=PolicyConfig(kind="lstm", hidden_sizes=[64]))
        obs = ObsSpec.from_space(spaces.Box(-1.0, 1.0, (2,)), "benchmark")
        policy = build_policy(obs, spaces.Discrete(2), config).to(device)
        x = torch.randn(args.steps, args.batch, 64, device=device, requires_grad=True)
        h = torch.zeros(1, args.batch, policy.lstm.hidden_size, device=device)
        first = torch.rand(args.steps, args.batch, device=device) < args.reset_prob
        results[device] = {
            method: time_unroll(policy, method, x, h, h.clone(), first, args.repeats) for method in UNROLLS
        }
    print(
        json.dumps(
            {"steps": args.steps, "batch": args.batch, "reset_prob": args.reset_prob, "seconds": results}, indent=2
        )
    )


if __name__ == "__main__":
    main()
