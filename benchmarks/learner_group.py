"""One learner against two data-parallel learners (learner.num_learners), on this machine's CPUs.

Per policy, the same config trains for a few iterations with 1 and with 2 learners (gloo). Times
are medians of the iteration scalars the callbacks see (the TensorBoard values): `perf/learn_s`
(the PPO epochs), `perf/allreduce_s` (the one all-reduce per minibatch that sums gradients and
loss terms) and `perf/iteration_s`. The buffer each learner holds is computed from the rollout
spec: with N learners each holds 1/N of it, so the largest batch grows N-fold per unit of memory.

    python -m benchmarks.learner_group [--iterations 8] [--json out.json]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

from benchmarks.processes import children_reaped, log
from benchmarks.report import write_json
from benchmarks.rows import REPO_ROOT

WARMUP = 2
POLICIES = {
    "mlp": ["env.id=CartPole-v1", "policy.kind=mlp"],
    "lstm": ["env.id=MaskedVelocityCartPole-v1", "policy.kind=lstm", "policy.lstm_hidden_size=64"],
    "cnn": ["env.id=tests.envs.toy:PixelSideEnv", "env.max_episode_steps=10", "policy.kind=mlp"],
}
BATCH = ["workers.num_workers=2", "workers.envs_per_worker=32", "ppo.rollout_steps=128", "ppo.num_minibatches=4"]


def run(policy: str, learners: int, iterations: int) -> dict:
    import trainer

    reports = []
    steps = 2 * 32 * 128
    overrides = [*POLICIES[policy], *BATCH, f"learner.num_learners={learners}", f"ppo.total_steps={iterations * steps}",
                 "logging.tensorboard=false", "checkpoint.every=0"]  # fmt: skip
    with children_reaped():
        trainer.train(REPO_ROOT / "configs/cartpole.yaml", overrides=overrides, callbacks=[reports.append])
    measured = [r.scalars for r in reports[WARMUP:]]

    def median(tag: str) -> float:
        return statistics.median(s.get(tag, 0.0) for s in measured)

    minibatches = 4 * 4  # update_epochs x num_minibatches
    return {
        "learn_s": median("perf/learn_s"),
        "allreduce_s": median("perf/allreduce_s"),
        "allreduce_ms_per_minibatch": 1000 * median("perf/allreduce_s") / minibatches,
        "iteration_s": median("perf/iteration_s"),
        "samples_per_s_update": steps / median("perf/learn_s"),
    }


def buffer_per_learner(learners: int) -> dict:
    """Bytes of rollout buffer each learner holds for an Atari-size batch (84x84x4 uint8 frames,
    8 workers x 8 envs x 128 steps), computed from the rollout spec."""
    from trainer.core.config import load_config
    from trainer.core.envs import probe_run
    from trainer.core.policy import build_policy, rollout_spec

    config = load_config(REPO_ROOT / "configs/atari_breakout.yaml", ["workers.num_workers=8"])
    probe = probe_run(config)
    spec = rollout_spec(probe.obs_spec, build_policy(probe.obs_spec, probe.action_space, config), config)
    total = spec.nbytes(config.total_envs)
    return {"envs": config.total_envs, "steps": config.ppo.rollout_steps, "bytes_per_learner": total // learners}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=8)
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    rows = {}
    for policy in POLICIES:
        for learners in (1, 2):
            log(f"{policy}, {learners} learner(s)")
            rows[f"{policy}-{learners}"] = run(policy, learners, args.iterations)
    print(f"| policy | learners | update s ({2 * 32 * 128} samples, 16 minibatches) | update samples/s | "
          "all-reduce ms per minibatch | iteration s |")  # fmt: skip
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, row in rows.items():
        policy, learners = name.split("-")
        print(f"| {policy} | {learners} | {row['learn_s']:.3f} | {row['samples_per_s_update']:,.0f} | "
              f"{row['allreduce_ms_per_minibatch']:.2f} | {row['iteration_s']:.3f} |")  # fmt: skip
    for learners in (1, 2):
        memory = buffer_per_learner(learners)
        rows[f"buffer-{learners}"] = memory
        print(f"Atari {memory['envs']} envs x {memory['steps']} steps: {memory['bytes_per_learner'] / 2**20:,.0f} MiB "
              f"of buffer per learner with {learners} learner(s)")  # fmt: skip
    if args.json:
        write_json(Path(args.json), rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
