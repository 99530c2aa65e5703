"""Steps/s of the same in-process CartPole run with TensorBoard logging on and off.

    python -m benchmarks.logging_overhead [--steps 50000] [--repeats 3]

Runs alternate (on, off, on, off, ...) so load on the machine hits both alike; prints medians.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile

from trainer import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rates: dict[str, list[float]] = {"on": [], "off": []}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for mode in ("on", "off"):
                summary = train(
                    "configs/cartpole.yaml",
                    [
                        "execution=inline",
                        f"ppo.total_steps={args.steps}",
                        f"logging.tensorboard={mode == 'on'}",
                        "checkpoint.every=0",
                        "logging.progress_interval_s=1000",
                    ],
                    run_dir=f"{tmp}/{mode}{repeat}",
                )
                rates[mode].append(summary["steps_per_s"])
    on, off = statistics.median(rates["on"]), statistics.median(rates["off"])
    print(
        json.dumps(
            {"steps_per_s": rates, "median_on": on, "median_off": off, "overhead_pct": 100 * (1 - on / off)}, indent=2
        )
    )


if __name__ == "__main__":
    main()
